package substituter_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
	"github.com/nixoci/nixoci/substituter"
)

// clock is a settable clock for RecordOptions.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.now = t }

// upload PUTs p's NAR and narinfo, wanting want for the narinfo.
func upload(t *testing.T, s *substituter.Server, p *testPath, want int) {
	t.Helper()
	if r := put(t, s, p.NarURLPath(), p.File, goodAuth...); r.Code != 201 {
		t.Fatalf("PUT %s: %d %s", p.NarURLPath(), r.Code, r.Body)
	}
	if r := put(t, s, p.NarInfoPath(), []byte(narinfoText(t, p)), goodAuth...); r.Code != want {
		t.Fatalf("PUT %s: %d %s, want %d", p.NarInfoPath(), r.Code, r.Body, want)
	}
}

// recordServer serves l with uploads, recording as instance with the clock c.
func recordServer(t *testing.T, l *backend.Layout, instance string, c *clock, ro substituter.RecordOptions) *substituter.Server {
	t.Helper()
	ro.Instance, ro.Now = instance, c.Now
	s, _ := uploadServer(t, l, substituter.Options{Records: &ro})
	return s
}

// readRecord reads the record tag names: its roots and the store paths
// it lists, and the time of its newest push record.
func readRecord(t *testing.T, l *backend.Layout, tag string) (roots, paths []string, pushed time.Time) {
	t.Helper()
	c, err := artifact.ReadClosure(t.Context(), l, tag)
	if err != nil {
		t.Fatalf("record %s: %v", tag, err)
	}
	for _, m := range c.Members {
		paths = append(paths, m.StorePath)
	}
	recs, err := artifact.PushRecords(t.Context(), l, c.Descriptor)
	if err != nil || len(recs) == 0 {
		t.Fatalf("record %s: push records %v, %v", tag, recs, err)
	}
	return c.Roots, paths, recs[0].Pushed
}

func sorted(s ...string) []string { slices.Sort(s); return s }

// TestRecordsUploads: an upload is recorded at Close in the day's record
// of the instance, with the reference the backend holds (Nix did not
// upload it: the cache had it), and a push record at the clock's time;
// a restarted instance adds to that record; the next day starts a new
// one; a record full of roots continues in the next.
func TestRecordsUploads(t *testing.T) {
	l := newLayout(t)
	day1 := time.Date(2026, 3, 1, 23, 59, 0, 0, time.UTC)
	c := &clock{now: day1}
	lib := newTestPath(t, "rec-lib", "lib", spec.CompressionZstd)
	lib.store(t, l)
	app := newTestPath(t, "rec-app", "app", spec.CompressionZstd, lib)
	s := recordServer(t, l, "ci-1", c, substituter.RecordOptions{})
	upload(t, s, app, 201)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	tag1 := spec.RecordTag(spec.RecordUploaded, "2026-03-01", "ci-1", 1)
	roots, paths, pushed := readRecord(t, l, tag1)
	if !slices.Equal(roots, []string{app.StorePath}) || !slices.Equal(paths, sorted(app.StorePath, lib.StorePath)) {
		t.Errorf("%s: roots %v, paths %v; want the upload %s as root, with its reference", tag1, roots, paths, app.StorePath)
	}
	if !pushed.Equal(day1) {
		t.Errorf("%s pushed at %v, want the clock's %v", tag1, pushed, day1)
	}

	// Restarted, same day: merged with the record, not replacing it. An
	// upload of a path stored already is recorded too.
	other := newTestPath(t, "rec-other", "other", spec.CompressionXz)
	s = recordServer(t, l, "ci-1", c, substituter.RecordOptions{})
	upload(t, s, other, 201)
	upload(t, s, lib, 201)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	roots, paths, _ = readRecord(t, l, tag1)
	if want := sorted(app.StorePath, other.StorePath, lib.StorePath); !slices.Equal(roots, want) || !slices.Equal(paths, want) {
		t.Errorf("%s after a restart: roots %v, paths %v; want %v for both", tag1, roots, paths, want)
	}

	// The next day, with one root per record: two records.
	c.Set(day1.Add(2 * time.Minute))
	a := newTestPath(t, "rec-a", "a", spec.CompressionZstd)
	b := newTestPath(t, "rec-b", "b", spec.CompressionZstd)
	s = recordServer(t, l, "ci-1", c, substituter.RecordOptions{MaxRoots: 1})
	upload(t, s, a, 201)
	upload(t, s, b, 201)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for n := 1; n <= 2; n++ {
		roots, _, _ := readRecord(t, l, spec.RecordTag(spec.RecordUploaded, "2026-03-02", "ci-1", n))
		got = append(got, roots...)
	}
	if !slices.Equal(sorted(got...), sorted(a.StorePath, b.StorePath)) {
		t.Errorf("records 1 and 2 of 2026-03-02: roots %v, want one each of %s and %s", got, a.StorePath, b.StorePath)
	}
	if _, err := l.Resolve(t.Context(), spec.RecordTag(spec.RecordUploaded, "2026-03-02", "ci-1", 3)); err == nil {
		t.Errorf("a third record for two paths")
	}
}

// TestRecordsRetryAfterFailure: while the record's tag names something
// else than a closure, its write fails, is counted, and the path stays
// pending (uploads still succeed); once the tag names a closure the next
// flush merges the pending path into it. Past MaxPending, an upload is
// refused with 503 rather than stored unrecorded.
func TestRecordsRetryAfterFailure(t *testing.T) {
	l := newLayout(t)
	c := &clock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	tag := spec.RecordTag(spec.RecordUploaded, "2026-03-01", "ci-2", 1)
	foreignManifest(t, l, tag)
	s := recordServer(t, l, "ci-2", c, substituter.RecordOptions{Interval: 5 * time.Millisecond, MaxPending: 1})
	p := newTestPath(t, "retry-p", "p", spec.CompressionZstd)
	upload(t, s, p, 201)
	eventually(t, "a failed write counted", func() bool {
		v, _ := metricValue(t, s, `nixoci_serve_records_total{kind="uploaded",outcome="failed"}`)
		return v >= 1
	})
	if v, _ := metricValue(t, s, `nixoci_serve_record_pending`); v != 1 {
		t.Errorf("pending %v after a failed write, want 1", v)
	}
	q := newTestPath(t, "retry-q", "q", spec.CompressionZstd)
	upload(t, s, q, 503)
	if v, _ := metricValue(t, s, `nixoci_serve_record_dropped_total{kind="uploaded",reason="full"}`); v != 1 {
		t.Errorf("dropped %v, want 1", v)
	}

	// The tag now names a closure of another path: merged with it.
	kept := newTestPath(t, "retry-kept", "kept", spec.CompressionZstd)
	art := kept.store(t, l)
	if _, _, err := artifact.StoreClosure(t.Context(), l, []string{kept.StorePath}, []artifact.PathArtifact{art}, tag, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the pending path written", func() bool {
		v, _ := metricValue(t, s, `nixoci_serve_recorded_paths_total{kind="uploaded"}`)
		return v == 1
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	roots, _, _ := readRecord(t, l, tag)
	if want := sorted(kept.StorePath, p.StorePath); !slices.Equal(roots, want) {
		t.Errorf("roots %v, want %v", roots, want)
	}
}

// foreignManifest tags tag in l with another tool's manifest.
func foreignManifest(t *testing.T, l *backend.Layout, tag string) {
	t.Helper()
	ctx := context.Background()
	if err := l.Push(ctx, spec.EmptyConfig, bytes.NewReader(spec.EmptyConfigData)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		t.Fatal(err)
	}
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: "application/vnd.example.other", Config: spec.EmptyConfig, Layers: spec.EmptyLayers()}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	desc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, data)
	if err := l.PushReference(ctx, desc, bytes.NewReader(data), tag); err != nil {
		t.Fatal(err)
	}
}

// TestRecordWriteCost: adding one upload to a record costs the same
// backend requests whether the record lists 10 or 100 paths (the index
// carries every entry's narinfo: nothing is fetched per path listed).
func TestRecordWriteCost(t *testing.T) {
	cost := func(n int) int {
		l := newLayout(t)
		c := &clock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
		ro := substituter.RecordOptions{Instance: "cost", Now: c.Now, MaxRoots: 1000}
		s, _ := uploadServer(t, l, substituter.Options{Records: &ro})
		var last *testPath
		for i := range n {
			p := newTestPath(t, fmt.Sprintf("cost-%d-%d", n, i), fmt.Sprint(i), spec.CompressionZstd)
			upload(t, s, p, 201)
			last = p
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		counted := &counting{Target: l}
		s, _ = uploadServer(t, l, substituter.Options{Backends: backends(counted), Records: &ro})
		p := newTestPath(t, fmt.Sprintf("cost-%d-new", n), "new", spec.CompressionZstd, last)
		upload(t, s, p, 201)
		counted.reset()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		roots, _, _ := readRecord(t, l, spec.RecordTag(spec.RecordUploaded, "2026-03-01", "cost", 1))
		if len(roots) != n+1 {
			t.Fatalf("record of %d roots, want %d", len(roots), n+1)
		}
		return counted.total()
	}
	small, large := cost(10), cost(100)
	t.Logf("backend requests of a record write adding one path: %d to a record of 10 paths, %d to one of 100", small, large)
	if small != large {
		t.Errorf("a record write costs %d requests with 10 paths listed, %d with 100: it grows with the record", small, large)
	}
}
