package substituter_test

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/internal/serving"
	"github.com/nixoci/nixoci/spec"
	"github.com/nixoci/nixoci/substituter"
)

func chainNames(prefix string, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%02d", prefix, i)
	}
	return names
}

// prefetched is the count of narinfos fetched ahead of Nix via a way.
func prefetched(t *testing.T, s *substituter.Server, via string) float64 {
	v, _ := metricValue(t, s, `nixoci_prefetched_narinfos_total{outcome="ok",via="`+via+`"}`)
	return v
}

// TestPrefetchClosureFromRoot: Nix's request for a closure's root makes
// serve fetch every path of the closure ahead (found through the
// referrers of the root's manifest, the catalog being off), within the
// closure's size plus a few requests; Nix's later requests reach no
// backend.
func TestPrefetchClosureFromRoot(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version string
		catalog bool
		via     string
		fetches int // manifest fetches at most: a format 2 index describes its paths whole
	}{
		{"v2 from referrers", spec.ClosureVersion, false, "closure", 2},
		{"v2 from the catalog", spec.ClosureVersion, true, "closure", 2},
		{"v1 by references", spec.Version, false, "references", 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := fixture.Layout(t)
			names := chainNames("pf", 30)
			_, arts := fixture.Synthetic(t, l, "chain", tc.version, "1", names...)
			c := &counting{Target: l}
			var interval time.Duration // default: read at start
			if !tc.catalog {
				interval = -1
			}
			s, _ := newServer(t, substituter.Options{Backends: backends(c), CatalogInterval: interval})
			defer s.Close()
			if tc.catalog {
				// The first read of the catalog is done once a lookup it
				// could answer is answered.
				get(t, s, "/00000000000000000000000000000000.narinfo")
				c.reset()
			}
			if r := get(t, s, "/"+spec.PathTag(arts[0].Info.StorePath)+".narinfo"); r.Code != 200 {
				t.Fatalf("root narinfo: %d %s", r.Code, r.Body)
			}
			eventually(t, "the closure prefetched", func() bool { return prefetched(t, s, tc.via) == float64(len(arts)-1) })
			fetches := len(c.fetchReferences()) + len(c.fetch)
			if fetches > tc.fetches {
				t.Errorf("%d manifest fetches for a closure of %d paths (at most %d):\n%s", fetches, len(arts), tc.fetches, c.String())
			}
			c.reset()
			for _, a := range arts {
				if r := get(t, s, "/"+spec.PathTag(a.Info.StorePath)+".narinfo"); r.Code != 200 {
					t.Fatalf("%s: %d", a.Info.StorePath, r.Code)
				}
			}
			if n := c.total(); n != 0 {
				t.Errorf("Nix's requests after the prefetch reached the backend %d times:\n%s", n, c.String())
			}
		})
	}
}

// flaky fails every fetch of some manifests while fail is set.
type flaky struct {
	backend.Target
	digests map[string]bool
	fail    atomic.Bool
	failed  atomic.Int64
}

func (f *flaky) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	if f.fail.Load() && f.digests[d.Digest.String()] {
		f.failed.Add(1)
		return nil, fmt.Errorf("test: %w", backend.ErrRegistry)
	}
	return f.Target.Fetch(ctx, d)
}

func (f *flaky) FetchReference(ctx context.Context, ref string) (ocispec.Descriptor, io.ReadCloser, error) {
	if f.fail.Load() && f.digests[ref] {
		f.failed.Add(1)
		return ocispec.Descriptor{}, nil, fmt.Errorf("test: %w", backend.ErrRegistry)
	}
	return f.Target.FetchReference(ctx, ref)
}

// TestPrefetchFailureIsNotNotFound: a backend failure during prefetch
// leaves the path to be fetched when Nix asks; it never turns into 404,
// even for a path found only through a closure copied without tags.
func TestPrefetchFailureIsNotNotFound(t *testing.T) {
	src := fixture.Layout(t)
	closure, arts := fixture.Synthetic(t, src, "chain", spec.ClosureVersion, "2", chainNames("pff", 8)...)
	l := fixture.Layout(t)
	if _, err := oras.Copy(t.Context(), src, "chain", l, "chain", oras.DefaultCopyOptions); err != nil {
		t.Fatal(err)
	}
	// The closure index is read at start (the catalog), then fails: the
	// prefetch fetches the paths one by one, and one of them fails too.
	f := &flaky{Target: l, digests: map[string]bool{closure.Digest.String(): true, arts[4].Manifest.Digest.String(): true}}
	s, _ := newServer(t, substituter.Options{Backends: backends(f)})
	defer s.Close()
	get(t, s, "/00000000000000000000000000000000.narinfo") // the catalog is read
	f.fail.Store(true)
	if r := get(t, s, "/"+spec.PathTag(arts[0].Info.StorePath)+".narinfo"); r.Code != 200 {
		t.Fatalf("root of the copied closure: %d %s", r.Code, r.Body)
	}
	eventually(t, "the prefetch to finish", func() bool {
		v, _ := metricValue(t, s, `nixoci_prefetched_narinfos_total{outcome="failed",via="closure"}`)
		return v == 1 && prefetched(t, s, "closure") == 6
	})
	if r := get(t, s, "/"+spec.PathTag(arts[4].Info.StorePath)+".narinfo"); r.Code != 502 {
		t.Errorf("while the backend fails: %d, want 502", r.Code)
	}
	f.fail.Store(false)
	if r := get(t, s, "/"+spec.PathTag(arts[4].Info.StorePath)+".narinfo"); r.Code != 200 {
		t.Errorf("after the backend recovered: %d, want 200", r.Code)
	}
	if f.failed.Load() < 2 {
		t.Errorf("the failure was injected %d times, want the prefetch's and Nix's", f.failed.Load())
	}
}

// TestNARsAheadOfASubstitutingClient: narinfo requests alone (nix
// path-info) fetch no NAR; the client's first NAR request fetches the NARs
// of the narinfos it asked for before, and later narinfos fetch theirs at
// once; the NARs are then served from the cache. The layout counts as far
// as everything does, with --nar-ahead on, and with a distance every
// answer reaches (1ns) in auto mode.
func TestNARsAheadOfASubstitutingClient(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mode    substituter.NARAhead
		latency time.Duration
	}{
		{"on", substituter.NARAheadOn, 0},
		{"auto, far", substituter.NARAheadAuto, time.Nanosecond},
	} {
		t.Run(tc.name, func(t *testing.T) { testNARsAhead(t, tc.mode, tc.latency) })
	}
}

func testNARsAhead(t *testing.T, mode substituter.NARAhead, latency time.Duration) {
	l := fixture.Layout(t)
	_, arts := fixture.Synthetic(t, l, "chain", spec.ClosureVersion, "3", chainNames("ahead", 6)...)
	b := backends(l)
	bc, err := serving.NewBlobCache(b, serving.BlobCacheOptions{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	s, _ := newServer(t, substituter.Options{Backends: b, BlobCache: bc, Prefetch: -1, CatalogInterval: -1, NARAhead: mode, NARAheadLatency: latency})
	defer s.Close()
	fills := func() float64 {
		v, _ := metricValue(t, s, `nixoci_blob_cache_fills_total{outcome="ok"}`)
		return v
	}
	for _, a := range arts[:5] {
		if r := get(t, s, "/"+spec.PathTag(a.Info.StorePath)+".narinfo"); r.Code != 200 {
			t.Fatalf("narinfo: %d", r.Code)
		}
	}
	if n := fills(); n != 0 {
		t.Fatalf("narinfo requests alone fetched %v NARs", n)
	}
	if r := get(t, s, "/"+arts[0].Info.URL); r.Code != 200 {
		t.Fatalf("NAR: %d", r.Code)
	}
	eventually(t, "the NARs of the narinfos asked before", func() bool { return fills() >= 4 })
	if r := get(t, s, "/"+spec.PathTag(arts[5].Info.StorePath)+".narinfo"); r.Code != 200 {
		t.Fatalf("narinfo: %d", r.Code)
	}
	eventually(t, "the NAR of a narinfo asked while substituting", func() bool { return fills() >= 5 })
	for _, a := range arts[1:] {
		if r := get(t, s, "/"+a.Info.URL); r.Code != 200 {
			t.Fatalf("NAR %s: %d", a.Info.URL, r.Code)
		}
	}
	if v, _ := metricValue(t, s, `nixoci_blob_cache_requests_total{result="cached"}`); v < 5 {
		t.Errorf("%v NARs served from the cache, want the 5 fetched ahead", v)
	}
}

// TestNoNARsAheadFromANearSource: by default, NARs of a source closer
// than NARAheadLatency (an image layout: an hour is further than any
// file opens) are not fetched ahead: the client substitutes as before,
// each NAR streamed from the layout, and the blob cache stays empty;
// with NARAheadOff likewise, whatever the distance.
func TestNoNARsAheadFromANearSource(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mode     substituter.NARAhead
		latency  time.Duration
		decision string
	}{
		{"auto, near", substituter.NARAheadAuto, time.Hour, "near"},
		{"off", substituter.NARAheadOff, time.Nanosecond, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := fixture.Layout(t)
			_, arts := fixture.Synthetic(t, l, "chain", spec.ClosureVersion, "3", chainNames("near", 4)...)
			b := backends(l)
			bc, err := serving.NewBlobCache(b, serving.BlobCacheOptions{MaxBytes: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer bc.Close()
			s, _ := newServer(t, substituter.Options{Backends: b, BlobCache: bc, Prefetch: -1, CatalogInterval: -1, NARAhead: tc.mode, NARAheadLatency: tc.latency})
			defer s.Close()
			for _, a := range arts {
				if r := get(t, s, "/"+spec.PathTag(a.Info.StorePath)+".narinfo"); r.Code != 200 {
					t.Fatalf("narinfo: %d", r.Code)
				}
			}
			for _, a := range arts {
				if r := get(t, s, "/"+a.Info.URL); r.Code != 200 {
					t.Fatalf("NAR %s: %d", a.Info.URL, r.Code)
				}
				// A narinfo asked while substituting: fetched at once if far.
				get(t, s, "/"+spec.PathTag(a.Info.StorePath)+".narinfo")
			}
			if tc.decision != "" {
				if v, _ := metricValue(t, s, `nixoci_nar_ahead_total{decision="`+tc.decision+`"}`); v < float64(len(arts)) {
					t.Errorf("%v NARs decided %s, want at least %d", v, tc.decision, len(arts))
				}
			}
			// Every fill, had one started, would have been counted by now:
			// they start as the NAR requests return (before the next one).
			for _, outcome := range []string{"ok", "skipped", "failed"} {
				if v, _ := metricValue(t, s, `nixoci_blob_cache_fills_total{outcome="`+outcome+`"}`); v != 0 {
					t.Errorf("%v fills %s, want none", v, outcome)
				}
			}
			if v, _ := metricValue(t, s, `nixoci_blob_cache_requests_total{result="cached"}`); v != 0 {
				t.Errorf("%v NARs served from the cache, want none", v)
			}
		})
	}
}

// gatedReferrers holds every referrers listing until gate is closed,
// counting them; entered receives one value per listing started.
type gatedReferrers struct {
	*counting
	gate    chan struct{}
	entered chan struct{}
	lists   atomic.Int64
}

func (g *gatedReferrers) Referrers(ctx context.Context, desc ocispec.Descriptor, artifactType string, fn func([]ocispec.Descriptor) error) error {
	g.lists.Add(1)
	select {
	case g.entered <- struct{}{}:
	default:
	}
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.counting.Target.Referrers(ctx, desc, artifactType, fn)
}

// TestPrefetchLookupsDuringTheSearch: Nix's lookups of a closure's paths
// while serve is still finding the closure of the root it asked for a
// moment before wait for that search rather than each searching on its
// own (a referrers listing each, then their references one by one): one
// listing in all, and no manifest fetched beyond the paths Nix asked for
// and the closure's index.
func TestPrefetchLookupsDuringTheSearch(t *testing.T) {
	l := fixture.Layout(t)
	_, arts := fixture.Synthetic(t, l, "chain", spec.ClosureVersion, "4", chainNames("search", 30)...)
	g := &gatedReferrers{counting: &counting{Target: l}, gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	s, _ := newServer(t, substituter.Options{Backends: backends(g), CatalogInterval: -1})
	defer s.Close()
	if r := get(t, s, "/"+spec.PathTag(arts[0].Info.StorePath)+".narinfo"); r.Code != 200 {
		t.Fatalf("root narinfo: %d %s", r.Code, r.Body)
	}
	<-g.entered // the search lists the root's referrers
	asked := arts[1:4]
	for _, a := range asked {
		if r := get(t, s, "/"+spec.PathTag(a.Info.StorePath)+".narinfo"); r.Code != 200 {
			t.Fatalf("%s: %d", a.Info.StorePath, r.Code)
		}
	}
	close(g.gate)
	rest := float64(len(arts) - 1 - len(asked))
	eventually(t, "the rest of the closure prefetched", func() bool { return prefetched(t, s, "closure") == rest })
	if n := g.lists.Load(); n != 1 {
		t.Errorf("%d referrers listings, want the root's alone", n)
	}
	if n, want := len(g.fetchReferences())+len(g.fetch), 1+len(asked)+1; n > want {
		t.Errorf("%d manifest fetches, want at most %d (the paths asked for and the closure index):\n%s", n, want, g.String())
	}
	if v := prefetched(t, s, "references"); v != 0 {
		t.Errorf("%v paths fetched by references, want none: the closure covers them", v)
	}
}
