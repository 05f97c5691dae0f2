package gc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/gc"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/spec"
)

// noGrace collects at once.
var noGrace = gc.Options{Grace: -1}

// files snapshots a layout: every file and its content.
var files = fixture.FileDigests

// checkClosure reads the closure tagged tag and every blob it reaches.
func checkClosure(t *testing.T, l *backend.Layout, tag string, want []artifact.PathArtifact) {
	t.Helper()
	ctx := context.Background()
	c, err := artifact.ReadClosure(ctx, l, tag)
	if err != nil {
		t.Fatalf("closure %s: %v", tag, err)
	}
	paths, err := artifact.ClosurePaths(ctx, l, c, 4)
	if err != nil {
		t.Fatalf("closure %s: %v", tag, err)
	}
	if len(paths) != len(want) {
		t.Fatalf("closure %s: %d paths, want %d", tag, len(paths), len(want))
	}
	for _, p := range paths {
		for _, b := range []ocispec.Descriptor{p.NAR, p.NarInfo} {
			if _, err := backend.FetchAll(ctx, l, b, 1<<20); err != nil {
				t.Errorf("closure %s: %s: %v", tag, p.Info.StorePath, err)
			}
		}
		if _, err := artifact.FetchPath(ctx, l, p.Info.StorePath); err != nil {
			t.Errorf("closure %s: path tag of %s: %v", tag, p.Info.StorePath, err)
		}
	}
}

func storePaths(names ...string) []string {
	var out []string
	for _, n := range names {
		out = append(out, fixture.StorePath(n))
	}
	slices.Sort(out)
	return out
}

// TestCollectFollowsClosures: two closures sharing a path; after rm of
// one, a dry run lists its private paths and changes nothing, a real run
// removes them and their blobs, and the other closure is whole.
func TestCollectFollowsClosures(t *testing.T) {
	ctx := context.Background()
	for _, version := range []string{spec.ClosureVersion, spec.Version} {
		t.Run("v"+version, func(t *testing.T) {
			l := fixture.Layout(t)
			_, p1 := fixture.Synthetic(t, l, "c1", version, "s", "app1", "data1", "shared")
			_, p2 := fixture.Synthetic(t, l, "c2", version, "s", "app2", "data2", "shared")
			for _, tag := range []string{"c1", "c2"} {
				d, _ := l.Resolve(ctx, tag)
				if _, err := artifact.StorePushRecord(ctx, l, d, tag, artifact.RecordOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			if res, err := gc.Collect(ctx, l, "l", noGrace); err != nil || len(res.Removed) != 0 {
				t.Fatalf("collecting with every closure tagged: %v, removed %+v", err, res.Removed)
			}
			if _, err := gc.Remove(ctx, l, []string{"c1"}, gc.RemoveOptions{}); err != nil {
				t.Fatal(err)
			}
			before := files(t, l.Dir())
			dry := noGrace
			dry.DryRun = true
			res, err := gc.Collect(ctx, l, "l", dry)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := res.StorePaths(), storePaths("app1", "data1"); !slices.Equal(got, want) {
				t.Errorf("dry run lists paths %v, want %v", got, want)
			}
			if res.BlobFiles == 0 || res.Bytes == 0 {
				t.Errorf("dry run: %d blob files, %d bytes, want some", res.BlobFiles, res.Bytes)
			}
			if after := files(t, l.Dir()); !maps.Equal(before, after) {
				t.Error("the dry run changed the layout")
			}

			res, err = gc.Collect(ctx, l, "l", noGrace)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := res.StorePaths(), storePaths("app1", "data1"); !slices.Equal(got, want) {
				t.Errorf("removed paths %v, want %v", got, want)
			}
			checkClosure(t, l, "c2", p2)
			for _, p := range p1[:2] {
				if ok, _ := l.Exists(ctx, p.NAR); ok {
					t.Errorf("%s: NAR blob still there", p.Info.StorePath)
				}
				if _, err := artifact.FetchPath(ctx, l, p.Info.StorePath); !errors.Is(err, errdef.ErrNotFound) {
					t.Errorf("%s: tag still resolves (%v)", p.Info.StorePath, err)
				}
			}
			if ok, _ := l.Exists(ctx, p1[2].NAR); !ok {
				t.Error("the shared path's NAR went")
			}
			if m, ok, err := artifact.ReadGCMarker(ctx, l); err != nil || !ok || m.Finished.IsZero() {
				t.Errorf("marker after the run: %+v, %v, %v; want a finished one", m, ok, err)
			}
			// A second run finds nothing more but the old marker.
			res, err = gc.Collect(ctx, l, "l", noGrace)
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range res.Removed {
				t.Errorf("second run removed %s %s", it.Kind, it.Digest)
			}
			checkClosure(t, l, "c2", p2)
		})
	}
}

// TestRetention: closures ci-1..ci-5 pushed in order; keep-last 2 keeps
// ci-4 and ci-5; a closure re-pushed is kept; unmatched tags always stay.
func TestRetention(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		repush bool
		keep   []string
	}{
		{"in-order", false, []string{"ci-4", "ci-5", "release"}},
		{"repushed", true, []string{"ci-1", "ci-5", "release"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := fixture.Layout(t)
			base := time.Now().Add(-time.Hour)
			var arts = map[string][]artifact.PathArtifact{}
			for i, tag := range []string{"ci-1", "ci-2", "ci-3", "ci-4", "ci-5", "release"} {
				d, p := fixture.Synthetic(t, l, tag, spec.ClosureVersion, tag, "app-"+tag, "lib-"+tag)
				arts[tag] = p
				at := base.Add(time.Duration(i) * time.Minute)
				if _, err := artifact.StorePushRecord(ctx, l, d, tag, artifact.RecordOptions{At: at}); err != nil {
					t.Fatal(err)
				}
			}
			if tc.repush {
				d, _ := l.Resolve(ctx, "ci-1")
				if _, err := artifact.StorePushRecord(ctx, l, d, "ci-1", artifact.RecordOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			opts := noGrace
			opts.Retention = &gc.Retention{Match: []string{"ci-*"}, KeepLast: 2}
			res, err := gc.Collect(ctx, l, "l", opts)
			if err != nil {
				t.Fatal(err)
			}
			var tags []string
			l.Tags(ctx, "", func(page []string) error {
				for _, tag := range page {
					if _, ok := arts[tag]; ok {
						tags = append(tags, tag)
					}
				}
				return nil
			})
			if !slices.Equal(tags, tc.keep) {
				t.Errorf("closure tags left %v, want %v", tags, tc.keep)
			}
			for _, tag := range tc.keep {
				checkClosure(t, l, tag, arts[tag])
			}
			var wantGone []string
			for tag, p := range arts {
				if !slices.Contains(tc.keep, tag) {
					for _, a := range p {
						wantGone = append(wantGone, a.Info.StorePath)
					}
				}
			}
			slices.Sort(wantGone)
			if got := res.StorePaths(); !slices.Equal(got, wantGone) {
				t.Errorf("removed paths %v, want %v", got, wantGone)
			}
			if len(res.Dropped) != 3 || len(res.Kept) != 2 {
				t.Errorf("retention kept %v and dropped %v", res.Kept, res.Dropped)
			}
		})
	}
}

// addUntaggedEntry adds d to index.json without a tag.
func addUntaggedEntry(t *testing.T, dir string, d ocispec.Descriptor) {
	t.Helper()
	p := filepath.Join(dir, "index.json")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		t.Fatal(err)
	}
	idx.Manifests = append(idx.Manifests, ocispec.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size})
	if data, err = json.Marshal(idx); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestForeignSurvives: a tag naming another tool's artifact, and an
// untagged index.json entry, are never touched, nor what they reach,
// even a nixoci path manifest.
func TestForeignSurvives(t *testing.T) {
	ctx := context.Background()
	l := fixture.Layout(t)
	_, paths := fixture.Synthetic(t, l, "c1", spec.ClosureVersion, "s", "app", "lib")
	blob := []byte("another tool's data")
	bdesc := ocispec.Descriptor{MediaType: "application/x-other", Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	if err := backend.PushBytes(ctx, l, bdesc, blob); err != nil {
		t.Fatal(err)
	}
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: "application/x-other", Config: spec.EmptyConfig, Layers: []ocispec.Descriptor{bdesc}})
	mdesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(m), Size: int64(len(m))}
	if err := l.PushReference(ctx, mdesc, bytes.NewReader(m), "other"); err != nil {
		t.Fatal(err)
	}
	// Another tool's index naming the app's path manifest, under its own tag.
	idx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{paths[0].Manifest}})
	idesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(idx), Size: int64(len(idx))}
	if err := l.PushReference(ctx, idesc, bytes.NewReader(idx), "bundle"); err != nil {
		t.Fatal(err)
	}
	// And an untagged index.json entry naming lib's path manifest, as
	// other tools write them.
	addUntaggedEntry(t, l.Dir(), paths[1].Manifest)
	if _, err := gc.Remove(ctx, l, []string{"other"}, gc.RemoveOptions{}); !errors.Is(err, gc.ErrNotOurs) {
		t.Errorf("removing another tool's tag: %v, want ErrNotOurs", err)
	}
	if _, err := gc.Remove(ctx, l, []string{"c1"}, gc.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	res, err := gc.Collect(ctx, l, "l", noGrace)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.StorePaths(); len(got) != 0 {
		t.Errorf("removed %v; want none (app is reached by another tool's index, lib by an untagged entry)", got)
	}
	for _, d := range []ocispec.Descriptor{bdesc, mdesc, idesc, paths[0].Manifest, paths[0].NAR, paths[1].Manifest, paths[1].NAR} {
		if ok, _ := l.Exists(ctx, d); !ok {
			t.Errorf("%s went", d.Digest)
		}
	}
	for _, tag := range []string{"other", "bundle"} {
		if _, err := l.Resolve(ctx, tag); err != nil {
			t.Errorf("tag %s: %v", tag, err)
		}
	}
}

// TestOldRecordsGo: pushing a closure three times leaves three push
// records; a collection keeps the newest.
func TestOldRecordsGo(t *testing.T) {
	ctx := context.Background()
	l := fixture.Layout(t)
	d, _ := fixture.Synthetic(t, l, "c", spec.ClosureVersion, "s", "app")
	base := time.Now().Add(-time.Hour)
	for i := range 3 {
		if _, err := artifact.StorePushRecord(ctx, l, d, "c", artifact.RecordOptions{At: base.Add(time.Duration(i) * time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	if recs, _ := artifact.PushRecords(ctx, l, d); len(recs) != 3 {
		t.Fatalf("%d records, want 3", len(recs))
	}
	res, err := gc.Collect(ctx, l, "l", noGrace)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := artifact.PushRecords(ctx, l, d)
	if err != nil || len(recs) != 1 || !recs[0].Pushed.Equal(base.Add(2*time.Minute)) {
		t.Errorf("records left %+v (%v), want the newest", recs, err)
	}
	n := 0
	for _, it := range res.Removed {
		if it.Kind == gc.KindRecord {
			n++
		}
	}
	if n != 2 {
		t.Errorf("removed %d records, want 2: %+v", n, res.Removed)
	}
}

// TestRunningMarkerRefused: a collection refuses to start while another
// one's marker says it runs, unless forced.
func TestRunningMarkerRefused(t *testing.T) {
	ctx := context.Background()
	l := fixture.Layout(t)
	fixture.Synthetic(t, l, "c", spec.ClosureVersion, "s", "app")
	m, err := artifact.NewGCMarker(time.Now().Add(-time.Minute), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if err := backend.PushBytes(ctx, l, spec.EmptyConfig, spec.EmptyConfigData); err != nil {
		t.Fatal(err)
	}
	if err := l.PushReference(ctx, m.Descriptor, bytes.NewReader(m.Data), spec.GCMarkerTag); err != nil {
		t.Fatal(err)
	}
	if _, err := gc.Collect(ctx, l, "l", noGrace); !errors.Is(err, gc.ErrCollectorRunning) {
		t.Errorf("collecting beside a running marker: %v, want ErrCollectorRunning", err)
	}
	opts := noGrace
	opts.Force = true
	if _, err := gc.Collect(ctx, l, "l", opts); err != nil {
		t.Errorf("forced: %v", err)
	}
	if after, ok, err := artifact.ReadGCMarker(ctx, l); err != nil || !ok || after.Finished.IsZero() {
		t.Errorf("marker after the forced run: %+v, %v, %v; want a finished one", after, ok, err)
	}
	if _, err := gc.Collect(ctx, l, "l", noGrace); err != nil {
		t.Errorf("after the forced run: %v", err)
	}
}

// TestUserTagsLikeOurs: closure tags a user chose that only look like
// the tags nixoci gives its own artifacts (32 characters outside the
// nix-base32 alphabet, a ".layer." inside, a "sha256-" that is no
// digest) are roots like any closure tag: their paths stay.
func TestUserTagsLikeOurs(t *testing.T) {
	ctx := context.Background()
	l := fixture.Layout(t)
	tags := []string{"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345", "release.layer.1", "sha256-nightly"}
	want := map[string][]artifact.PathArtifact{}
	for i, tag := range tags {
		_, want[tag] = fixture.Synthetic(t, l, tag, spec.ClosureVersion, tag, fmt.Sprintf("app%d", i), fmt.Sprintf("lib%d", i))
	}
	res, err := gc.Collect(ctx, l, "l", noGrace)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.StorePaths(); len(got) != 0 {
		t.Errorf("removed %v of closures tagged %v", got, tags)
	}
	if res.Closures != len(tags) {
		t.Errorf("%d closure roots, want %d", res.Closures, len(tags))
	}
	for _, tag := range tags {
		checkClosure(t, l, tag, want[tag])
	}
}

// pushOldManifest stores a manifest as nixoci before format 3 wrote push
// records, gc markers and tombstones: no layers ("layers": []).
func pushOldManifest(t *testing.T, l *backend.Layout, artifactType string, subject *ocispec.Descriptor, annotations map[string]string, tag string) ocispec.Descriptor {
	t.Helper()
	ctx := context.Background()
	data, err := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: artifactType, Config: spec.EmptyConfig, Layers: []ocispec.Descriptor{}, Subject: subject, Annotations: annotations})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(`"layers":[]`)) {
		t.Fatalf("not an old-style manifest: %s", data)
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: artifactType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := backend.PushBytes(ctx, l, spec.EmptyConfig, spec.EmptyConfigData); err != nil {
		t.Fatal(err)
	}
	if tag != "" {
		err = l.PushReference(ctx, desc, bytes.NewReader(data), tag)
	} else {
		err = l.Push(ctx, desc, bytes.NewReader(data))
	}
	if err != nil {
		t.Fatal(err)
	}
	return desc
}

// TestOldEmptyLayersRead: push records, a gc marker and a tombstone
// written with no layers, as before format 3, are read as ever: the
// records give the push time and the older goes, the marker is read, the
// tombstone is removed.
func TestOldEmptyLayersRead(t *testing.T) {
	ctx := context.Background()
	l := fixture.Layout(t)
	d, _ := fixture.Synthetic(t, l, "c", spec.ClosureVersion, "s", "app")
	base := time.Now().Add(-time.Hour).UTC()
	subject := &ocispec.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}
	var records []ocispec.Descriptor
	for i := range 2 {
		records = append(records, pushOldManifest(t, l, spec.ArtifactTypePushRecord, subject, map[string]string{
			spec.AnnotationVersion: spec.Version, spec.AnnotationPushed: spec.FormatTime(base.Add(time.Duration(i) * time.Minute)),
			spec.AnnotationTag: "c", spec.AnnotationTool: "nixoci/old"}, ""))
	}
	recs, err := artifact.PushRecords(ctx, l, d)
	if err != nil || len(recs) != 2 || !recs[0].Pushed.Equal(base.Add(time.Minute)) || recs[0].Tool != "nixoci/old" {
		t.Fatalf("old push records read as %+v, %v", recs, err)
	}
	pushOldManifest(t, l, spec.ArtifactTypeGCMarker, nil, map[string]string{spec.AnnotationVersion: spec.Version,
		spec.AnnotationGCStarted: spec.FormatTime(base), spec.AnnotationGCFinished: spec.FormatTime(base.Add(time.Second))}, spec.GCMarkerTag)
	m, ok, err := artifact.ReadGCMarker(ctx, l)
	if err != nil || !ok || !m.Started.Equal(base) || !m.Finished.Equal(base.Add(time.Second)) {
		t.Fatalf("old gc marker read as %+v, %v, %v", m, ok, err)
	}
	tomb := pushOldManifest(t, l, spec.ArtifactTypeGCMarker, nil, map[string]string{spec.AnnotationVersion: spec.Version,
		spec.AnnotationTombstone: "true", spec.AnnotationTag: "gone", spec.AnnotationPushed: spec.FormatTime(base)}, "gone")

	res, err := gc.Collect(ctx, l, "l", noGrace)
	if err != nil {
		t.Fatal(err)
	}
	removed := map[digest.Digest]string{}
	for _, it := range res.Removed {
		removed[it.Digest] = it.Kind
	}
	if removed[records[0].Digest] != gc.KindRecord || removed[records[1].Digest] != "" || removed[tomb.Digest] != gc.KindTombstone {
		t.Errorf("removed %v; want the older record %s and the tombstone %s, not the newer record", removed, records[0].Digest, tomb.Digest)
	}
}

// TestRetentionKeepsNothing: a Retention keeping none of its tags is
// refused unless it says KeepNone, and then drops them all.
func TestRetentionKeepsNothing(t *testing.T) {
	ctx := context.Background()
	l := fixture.Layout(t)
	fixture.Synthetic(t, l, "ci-1", spec.ClosureVersion, "k1", "app-k1")
	fixture.Synthetic(t, l, "release", spec.ClosureVersion, "k2", "app-k2")
	opts := noGrace
	opts.Retention = &gc.Retention{Match: []string{"ci-*"}}
	if res, err := gc.Collect(ctx, l, "l", opts); !errors.Is(err, gc.ErrKeepsNothing) || res != nil {
		t.Fatalf("a retention keeping nothing: %+v, %v; want ErrKeepsNothing", res, err)
	}
	opts.Retention = &gc.Retention{Match: []string{"ci-*"}, KeepNone: true, KeepLast: 1}
	if _, err := gc.Collect(ctx, l, "l", opts); err == nil {
		t.Fatal("KeepNone with KeepLast accepted")
	}
	opts.Retention = &gc.Retention{Match: []string{"ci-*"}, KeepNone: true}
	res, err := gc.Collect(ctx, l, "l", opts)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := res.StorePaths(), storePaths("app-k1"); !slices.Equal(got, want) || len(res.Dropped) != 1 {
		t.Errorf("KeepNone removed %v, dropped %v; want %v and ci-1", got, res.Dropped, want)
	}
}

// withGrace is opts collecting with grace period g.
func withGrace(g time.Duration) gc.Options { return gc.Options{Grace: g} }

// pendingPaths lists the store paths of res's pending path manifests,
// sorted.
func pendingPaths(res *gc.Result) []string {
	var out []string
	for _, it := range res.Pending {
		if it.Kind == gc.KindPath {
			out = append(out, it.StorePath)
		}
	}
	slices.Sort(out)
	return out
}

// TestGraceAcrossRuns: a collection never waits. The first run after
// c1's tag went deletes nothing, lists c1's private paths as pending
// until a grace period after its mark and records them (tag
// nixoci-gc-mark); another run leaves that record as it is; a run whose
// grace period the record's time has passed deletes them, saying they
// were unreachable since the first run's mark, and removes the record.
// A path seen in use between two runs starts its grace period again.
func TestGraceAcrossRuns(t *testing.T) {
	ctx := context.Background()
	l := fixture.Layout(t)
	_, p1 := fixture.Synthetic(t, l, "c1", spec.ClosureVersion, "s", "app1", "data1", "shared")
	_, p2 := fixture.Synthetic(t, l, "c2", spec.ClosureVersion, "s", "app2", "data2", "shared")
	if _, err := gc.Remove(ctx, l, []string{"c1"}, gc.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	private := storePaths("app1", "data1")
	before := files(t, l.Dir())
	first, err := gc.Collect(ctx, l, "l", withGrace(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Removed) != 0 || !slices.Equal(pendingPaths(first), private) {
		t.Fatalf("first run removed %+v, pending %v; want nothing removed, %v pending", first.Removed, pendingPaths(first), private)
	}
	for _, it := range first.Pending {
		if !it.Since.Equal(first.Marked) || !it.DeletableAt.Equal(first.Marked.Add(time.Hour)) {
			t.Errorf("pending %s %s: since %v, deletable %v; want %v and an hour later", it.Kind, it.Digest, it.Since, it.DeletableAt, first.Marked)
		}
	}
	if !first.NextDeletable.Equal(first.Marked.Add(time.Hour)) {
		t.Errorf("next deletable %v, want %v", first.NextDeletable, first.Marked.Add(time.Hour))
	}
	after := files(t, l.Dir())
	for f := range before {
		if after[f] != before[f] && filepath.Base(f) != "index.json" {
			t.Errorf("the first run changed %s", f)
		}
	}
	record, err := l.Resolve(ctx, spec.GCMarkTag)
	if err != nil {
		t.Fatalf("no mark record after the first run: %v", err)
	}
	if _, err := l.Resolve(ctx, spec.GCMarkerTag); err == nil {
		t.Error("a run that deleted nothing wrote the gc marker")
	}

	second, err := gc.Collect(ctx, l, "l", withGrace(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(second.Removed) != 0 || !slices.Equal(pendingPaths(second), private) || !second.NextDeletable.Equal(first.NextDeletable) {
		t.Errorf("second run: removed %+v, pending %v, next %v", second.Removed, pendingPaths(second), second.NextDeletable)
	}
	if again, _ := l.Resolve(ctx, spec.GCMarkTag); again.Digest != record.Digest {
		t.Error("a run that found the same garbage rewrote the mark record")
	}

	// Its grace period over (a grace period of 1ns stands in for an
	// hour passed), the next run deletes what both marks found.
	third, err := gc.Collect(ctx, l, "l", withGrace(time.Nanosecond))
	if err != nil {
		t.Fatal(err)
	}
	if got := third.StorePaths(); !slices.Equal(got, private) {
		t.Errorf("third run removed %v, want %v", got, private)
	}
	for _, it := range third.Removed {
		if !it.Since.Equal(first.Marked) {
			t.Errorf("removed %s %s unreachable since %v, want the first mark %v", it.Kind, it.Digest, it.Since, first.Marked)
		}
	}
	if len(third.Pending) != 0 {
		t.Errorf("third run left %+v pending", third.Pending)
	}
	if _, err := l.Resolve(ctx, spec.GCMarkTag); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("the mark record is still tagged with nothing pending (%v)", err)
	}
	checkClosure(t, l, "c2", p2)
	for _, p := range p1[:2] {
		if ok, _ := l.Exists(ctx, p.NAR); ok {
			t.Errorf("%s: NAR blob still there", p.Info.StorePath)
		}
	}

	// c2's tag goes, a run records its paths; c2 is pushed again before
	// the next run, which finds them in use: their grace period starts
	// again when they are next found unreachable.
	if _, err := gc.Remove(ctx, l, []string{"c2"}, gc.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if res, err := gc.Collect(ctx, l, "l", withGrace(time.Hour)); err != nil || len(pendingPaths(res)) != 3 {
		t.Fatalf("after c2's rm: %v, pending %v", err, pendingPaths(res))
	}
	fixture.Synthetic(t, l, "c2", spec.ClosureVersion, "s", "app2", "data2", "shared")
	if res, err := gc.Collect(ctx, l, "l", withGrace(time.Nanosecond)); err != nil || len(res.StorePaths()) != 0 || len(pendingPaths(res)) != 0 {
		t.Fatalf("with c2 pushed again: %v, removed %v, pending %v", err, res.StorePaths(), pendingPaths(res))
	}
	if _, err := gc.Remove(ctx, l, []string{"c2"}, gc.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	fourth, err := gc.Collect(ctx, l, "l", withGrace(time.Nanosecond))
	if err != nil || len(fourth.StorePaths()) != 0 || len(pendingPaths(fourth)) != 3 {
		t.Fatalf("a run after c2's second rm: %v, removed %v, pending %v; want all pending", err, fourth.StorePaths(), pendingPaths(fourth))
	}
	fifth, err := gc.Collect(ctx, l, "l", withGrace(time.Nanosecond))
	if err != nil || len(fifth.StorePaths()) != 3 {
		t.Fatalf("the run after: %v, removed %v", err, fifth.StorePaths())
	}
	for _, it := range fifth.Removed {
		if !it.Since.Equal(fourth.Marked) {
			t.Errorf("removed %s since %v, want %v (the grace period restarted)", it.StorePath, it.Since, fourth.Marked)
		}
	}
}

// TestPendingTagKeepsPaths: a path found unreachable long ago that a
// closure tag now names is not deleted while retention's drop of that
// tag waits for its grace period: nothing of ours goes while something
// that stays names it.
func TestPendingTagKeepsPaths(t *testing.T) {
	ctx := context.Background()
	l := fixture.Layout(t)
	_, orphan := fixture.Synthetic(t, l, "o", spec.ClosureVersion, "s", "x")
	if _, err := gc.Remove(ctx, l, []string{"o"}, gc.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if res, err := gc.Collect(ctx, l, "l", withGrace(time.Hour)); err != nil || !slices.Equal(pendingPaths(res), storePaths("x")) {
		t.Fatalf("first run: %v, pending %v", err, pendingPaths(res))
	}
	_, arts := fixture.Synthetic(t, l, "ci-1", spec.ClosureVersion, "s", "app", "x")
	if arts[1].Manifest.Digest != orphan[0].Manifest.Digest {
		t.Fatal("the closure does not hold the orphan's path manifest")
	}
	opts := withGrace(time.Nanosecond)
	opts.Retention = &gc.Retention{Match: []string{"ci-*"}, KeepNone: true}
	res, err := gc.Collect(ctx, l, "l", opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.StorePaths()) != 0 || !slices.Equal(pendingPaths(res), storePaths("app", "x")) {
		t.Errorf("with ci-1 just dropped: removed %v, pending %v; want app and x pending", res.StorePaths(), pendingPaths(res))
	}
	checkClosure(t, l, "ci-1", arts)
	res, err = gc.Collect(ctx, l, "l", opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.StorePaths(); !slices.Equal(got, storePaths("app", "x")) {
		t.Errorf("the run after: removed %v", got)
	}
	if _, err := l.Resolve(ctx, "ci-1"); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("ci-1 still tagged (%v)", err)
	}
}

// TestWait: with Wait, one Collect does what collections did before mark
// records: it finds c1's paths, waits until they are the grace period
// old, and deletes them.
func TestWait(t *testing.T) {
	ctx := context.Background()
	l := fixture.Layout(t)
	fixture.Synthetic(t, l, "c1", spec.ClosureVersion, "s", "app1", "shared")
	_, p2 := fixture.Synthetic(t, l, "c2", spec.ClosureVersion, "s", "app2", "shared")
	if _, err := gc.Remove(ctx, l, []string{"c1"}, gc.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	const grace = 200 * time.Millisecond
	opts := gc.Options{Grace: grace, Wait: true, Progress: &gc.Progress{}}
	res, err := gc.Collect(ctx, l, "l", opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.StorePaths(); !slices.Equal(got, storePaths("app1")) || len(res.Pending) != 0 {
		t.Errorf("removed %v, pending %+v; want app1 and nothing pending", got, res.Pending)
	}
	for _, it := range res.Removed {
		if res.Marked.Sub(it.Since) < grace {
			t.Errorf("%s %s removed %v after it was found unreachable, less than %v", it.Kind, it.Digest, res.Marked.Sub(it.Since), grace)
		}
	}
	checkClosure(t, l, "c2", p2)
}

// writeRecord tags a mark record in l, as any writer could.
func writeRecord(t *testing.T, l *backend.Layout, r artifact.MarkRecord) {
	t.Helper()
	ctx := context.Background()
	record, manifest, err := artifact.NewMarkRecord(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []artifact.Blob{record, {Descriptor: spec.EmptyConfig, Data: spec.EmptyConfigData}} {
		if err := backend.PushBytes(ctx, l, b.Descriptor, b.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.PushReference(ctx, manifest.Descriptor, bytes.NewReader(manifest.Data), spec.GCMarkTag); err != nil {
		t.Fatal(err)
	}
}

// TestMarkRecordTrustedForTimesOnly: a mark record claiming that every
// path was unreachable for a day makes an unreachable path go at once,
// but never one a root reaches; a record that is not one, or a time
// after the record's own mark, starts the grace period afresh.
func TestMarkRecordTrustedForTimesOnly(t *testing.T) {
	ctx := context.Background()
	l := fixture.Layout(t)
	c1, p1 := fixture.Synthetic(t, l, "c1", spec.ClosureVersion, "s", "app1", "shared")
	_, p2 := fixture.Synthetic(t, l, "c2", spec.ClosureVersion, "s", "app2", "shared")
	if _, err := gc.Remove(ctx, l, []string{"c1"}, gc.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	entry := func(p artifact.PathArtifact, since time.Time) artifact.MarkEntry {
		return artifact.MarkEntry{Kind: gc.KindPath, Digest: p.Manifest.Digest, Tags: []string{spec.PathTag(p.Info.StorePath)}, Since: since}
	}

	// Not a record at all: every grace period starts now.
	data, err := backend.FetchAll(ctx, l, p2[0].Manifest, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.PushReference(ctx, p2[0].Manifest, bytes.NewReader(data), spec.GCMarkTag); err != nil {
		t.Fatal(err)
	}
	res, err := gc.Collect(ctx, l, "l", withGrace(time.Hour))
	if err != nil || len(res.Removed) != 0 || !slices.Equal(pendingPaths(res), storePaths("app1")) {
		t.Fatalf("with a mark record tag naming a path manifest: %v, removed %+v, pending %v", err, res.Removed, pendingPaths(res))
	}
	checkClosure(t, l, "c2", p2)

	// A time after the record's own mark does not count.
	writeRecord(t, l, artifact.MarkRecord{Marked: now.Add(-2 * time.Hour), Unreachable: []artifact.MarkEntry{entry(p1[0], now.Add(-time.Hour))}})
	if res, err := gc.Collect(ctx, l, "l", withGrace(time.Hour)); err != nil || len(res.Removed) != 0 {
		t.Fatalf("with a since after the record's mark: %v, removed %+v", err, res.Removed)
	}

	// A day-old claim for c1 (untagged, it still names app1) and every
	// path: app1 (unreachable) goes at once, app2 and shared (c2 reaches
	// them) stay.
	writeRecord(t, l, artifact.MarkRecord{Marked: now, Unreachable: []artifact.MarkEntry{
		{Kind: gc.KindClosure, Digest: c1.Digest, Since: now.Add(-24 * time.Hour)},
		entry(p1[0], now.Add(-24*time.Hour)), entry(p2[0], now.Add(-24*time.Hour)), entry(p2[1], now.Add(-24*time.Hour))}})
	res, err = gc.Collect(ctx, l, "l", withGrace(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if got := res.StorePaths(); !slices.Equal(got, storePaths("app1")) {
		t.Errorf("with a day-old record removed %v, want app1 alone", got)
	}
	checkClosure(t, l, "c2", p2)
}
