package substituter_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/internal/serving"
	"github.com/nixoci/nixoci/spec"
	"github.com/nixoci/nixoci/substituter"
)

func TestBackendFailure(t *testing.T) {
	l := newLayout(t)
	p := newTestPath(t, "fail-1", "fail", spec.CompressionZstd)
	p.store(t, l)
	empty := newLayout(t)
	absent := newTestPath(t, "absent-1", "absent", spec.CompressionZstd)

	for _, tc := range []struct {
		name     string
		backends func(f *failing) []backend.Target
		path     *testPath
		want     int
	}{
		{"only backend unreachable", func(f *failing) []backend.Target { return []backend.Target{f} }, p, 503},
		{"first unreachable, second has it", func(f *failing) []backend.Target { return []backend.Target{f, l} }, p, 200},
		{"first has it, second unreachable", func(f *failing) []backend.Target { return []backend.Target{l, f} }, p, 200},
		{"first lacks it, second unreachable", func(f *failing) []backend.Target { return []backend.Target{empty, f} }, p, 503},
		{"first unreachable, second lacks it", func(f *failing) []backend.Target { return []backend.Target{f, empty} }, absent, 503},
		{"nobody has it", func(*failing) []backend.Target { return []backend.Target{empty, l} }, absent, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &failing{}
			s, logs := newServer(t, substituter.Options{Backends: backends(tc.backends(f)...)})
			// NAR first (cold: located by digest), then narinfo, then the
			// NAR again (located through the narinfo).
			for i, path := range []string{tc.path.NarURLPath(), tc.path.NarInfoPath(), tc.path.NarURLPath()} {
				for _, m := range []string{http.MethodGet, http.MethodHead} {
					r := do(t, s, m, path, nil)
					if r.Code != tc.want {
						t.Errorf("%d: %s %s = %d, want %d\n%s", i, m, path, r.Code, tc.want, r.Body)
					}
					if tc.want == 200 && m == http.MethodGet && strings.HasPrefix(path, "/nar/") && r.Body != string(tc.path.File) {
						t.Errorf("%d: GET %s: wrong body", i, path)
					}
				}
			}
			if tc.want >= 500 {
				// Failures are not remembered: each request asked again.
				if n := f.calls.Load(); n < 6 {
					t.Errorf("the failing backend was asked %d times for 6 requests", n)
				}
				if out := logs.String(); !strings.Contains(out, "backend failure") || !strings.Contains(out, "level=ERROR") {
					t.Errorf("backend failure not logged as an error:\n%s", out)
				}
			}
		})
	}
}

// stalling is a backend whose metadata operations wait until their
// context ends.
type stalling struct{ backend.Target }

func (s stalling) FetchReference(ctx context.Context, ref string) (ocispec.Descriptor, io.ReadCloser, error) {
	<-ctx.Done()
	return ocispec.Descriptor{}, nil, ctx.Err()
}

func (s stalling) ResolveBlob(ctx context.Context, d digest.Digest) (ocispec.Descriptor, error) {
	<-ctx.Done()
	return ocispec.Descriptor{}, ctx.Err()
}

func (s stalling) Ping(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

func TestBackendTimeout(t *testing.T) {
	l := newLayout(t)
	p := newTestPath(t, "slow-1", "slow", spec.CompressionZstd)
	p.store(t, l)
	s, _ := newServer(t, substituter.Options{Backends: backendsWith(serving.BackendOptions{Timeout: 20 * time.Millisecond}, stalling{l})})
	for _, path := range []string{p.NarInfoPath(), p.NarURLPath()} {
		if r := get(t, s, path); r.Code != http.StatusGatewayTimeout {
			t.Errorf("GET %s from a stalled backend = %d, want 504", path, r.Code)
		}
	}
	if r := get(t, s, "/healthz"); r.Code != http.StatusServiceUnavailable {
		t.Errorf("GET /healthz from a stalled backend = %d, want 503", r.Code)
	}
}

// TestBackendConcurrencyLimit: MaxBackendRequests bounds backend
// operations; a request that cannot get a slot in time fails with 504.
func TestBackendConcurrencyLimit(t *testing.T) {
	l := newLayout(t)
	a := newTestPath(t, "limit-a", "a", spec.CompressionZstd)
	b := newTestPath(t, "limit-b", "b", spec.CompressionZstd)
	a.store(t, l)
	b.store(t, l)
	release := make(chan struct{})
	c := &counting{Target: l, beforeFetchReference: func(ref string) {
		if ref == a.Hash {
			<-release
		}
	}}
	s, _ := newServer(t, substituter.Options{Backends: backendsWith(serving.BackendOptions{MaxRequests: 1, Timeout: 50 * time.Millisecond}, c)})
	done := make(chan response)
	go func() { done <- get(t, s, a.NarInfoPath()) }()
	eventually(t, "the first lookup to reach the backend", func() bool { return len(c.fetchReferences()) == 1 })
	if r := get(t, s, b.NarInfoPath()); r.Code != http.StatusGatewayTimeout {
		t.Errorf("lookup without a free backend slot = %d, want 504", r.Code)
	}
	if refs := c.fetchReferences(); len(refs) != 1 {
		t.Errorf("a second backend request ran past MaxBackendRequests 1: %v", refs)
	}
	close(release)
	<-done
	if r := get(t, s, b.NarInfoPath()); r.Code != 200 {
		t.Errorf("after the slot is free: %d", r.Code)
	}
}

// TestNotAnArtifact: something else under a path's tag is a server-side
// problem (5xx), not absence.
func TestNotAnArtifact(t *testing.T) {
	l := newLayout(t)
	p := newTestPath(t, "real-1", "real", spec.CompressionZstd)
	art := p.store(t, l)
	other := hashPart("impostor-1")
	if err := l.Tag(context.Background(), art.Manifest, other); err != nil {
		t.Fatal(err)
	}
	s, _ := newServer(t, substituter.Options{Backends: backends(l)})
	if r := get(t, s, "/"+other+".narinfo"); r.Code != http.StatusBadGateway {
		t.Errorf("tag holding another path's artifact: %d, want 502", r.Code)
	}
	// The same with a second backend that lacks it: still not 404.
	s, _ = newServer(t, substituter.Options{Backends: backends(l, newLayout(t))})
	if r := get(t, s, "/"+other+".narinfo"); r.Code != http.StatusBadGateway {
		t.Errorf("with a second backend: %d, want 502", r.Code)
	}
}

func TestNegativeCache(t *testing.T) {
	l := newLayout(t)
	p := newTestPath(t, "late-1", "late", spec.CompressionZstd)
	c := &counting{Target: l}
	const ttl = 100 * time.Millisecond
	s, _ := newServer(t, substituter.Options{Backends: backends(c), NegativeTTL: ttl})

	start := time.Now()
	if r := get(t, s, p.NarInfoPath()); r.Code != 404 {
		t.Fatalf("before push: %d", r.Code)
	}
	p.store(t, l)
	calls := len(c.fetchReferences())
	r := get(t, s, p.NarInfoPath())
	switch {
	case r.Code == 404 && len(c.fetchReferences()) != calls:
		t.Errorf("a remembered 404 asked the backend again")
	case r.Code == 200 && time.Since(start) < ttl:
		t.Errorf("404 forgotten before NegativeTTL")
	case r.Code != 404 && r.Code != 200:
		t.Errorf("GET: %d", r.Code)
	}
	eventually(t, "the pushed path to appear", func() bool { return get(t, s, p.NarInfoPath()).Code == 200 })
	if time.Since(start) < ttl {
		t.Errorf("pushed path appeared before NegativeTTL")
	}
}

func TestPositiveCache(t *testing.T) {
	l := newLayout(t)
	p := newTestPath(t, "pos-1", "pos", spec.CompressionZstd)
	q := newTestPath(t, "pos-2", "pos2", spec.CompressionZstd)
	p.store(t, l)
	q.store(t, l)

	c := &counting{Target: l}
	s, _ := newServer(t, substituter.Options{Backends: backends(c)})
	for range 3 {
		get(t, s, p.NarInfoPath())
		get(t, s, p.NarURLPath())
	}
	if refs := c.fetchReferences(); len(refs) != 1 {
		t.Errorf("3 narinfo requests made %d backend requests", len(refs))
	}
	if blobs := c.resolveBlobs(); len(blobs) != 0 {
		t.Errorf("NARs of served narinfos were resolved again: %v", blobs)
	}

	// CacheTTL expires entries.
	c = &counting{Target: l}
	s, _ = newServer(t, substituter.Options{Backends: backends(c), CacheTTL: time.Millisecond})
	get(t, s, p.NarInfoPath())
	eventually(t, "the cached narinfo to expire", func() bool {
		get(t, s, p.NarInfoPath())
		return len(c.fetchReferences()) > 1
	})

	// CacheSize bounds the entries: with room for one, two paths
	// alternating are fetched every time.
	c = &counting{Target: l}
	s, _ = newServer(t, substituter.Options{Backends: backends(c), CacheSize: 1})
	for range 2 {
		get(t, s, p.NarInfoPath())
		get(t, s, q.NarInfoPath())
	}
	if refs := c.fetchReferences(); len(refs) != 4 {
		t.Errorf("CacheSize 1, alternating paths: %d backend requests, want 4", len(refs))
	}
	if v, _ := metricValue(t, s, "nixoci_cached_narinfos"); v != 1 {
		t.Errorf("nixoci_cached_narinfos %v with CacheSize 1", v)
	}
}

// TestSingleFlight: concurrent requests for one uncached path share one
// backend request.
func TestSingleFlight(t *testing.T) {
	l := newLayout(t)
	p := newTestPath(t, "flight-1", "flight", spec.CompressionZstd)
	p.store(t, l)
	release := make(chan struct{})
	c := &counting{Target: l, beforeFetchReference: func(string) { <-release }}
	s, _ := newServer(t, substituter.Options{Backends: backends(c)})
	srv := httptest.NewServer(s)
	defer srv.Close()

	const n = 8
	var wg sync.WaitGroup
	codes := make(chan int, n)
	for range n {
		wg.Go(func() {
			resp, body, err := rawRequest(t, srv, http.MethodGet, p.NarInfoPath(), nil)
			if err != nil {
				t.Error(err)
				codes <- 0
				return
			}
			if !strings.Contains(string(body), p.StorePath) {
				t.Errorf("body %q", body)
			}
			codes <- resp.StatusCode
		})
	}
	// All n have missed the cache (and so wait on the one lookup) before
	// the backend answers.
	eventually(t, "all requests to miss the cache", func() bool {
		v, _ := metricValue(t, s, `nixoci_cache_total{cache="narinfo",result="miss"}`)
		return v == n
	})
	close(release)
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != 200 {
			t.Errorf("status %d", code)
		}
	}
	if refs := c.fetchReferences(); len(refs) != 1 {
		t.Errorf("%d concurrent requests made %d backend requests", n, len(refs))
	}
}

// TestSingleFlightClientGone: the first client giving up does not fail
// the others waiting on the same lookup.
func TestSingleFlightClientGone(t *testing.T) {
	l := newLayout(t)
	p := newTestPath(t, "gone-1", "gone", spec.CompressionZstd)
	p.store(t, l)
	release := make(chan struct{})
	c := &counting{Target: l, beforeFetchReference: func(string) { <-release }}
	s, _ := newServer(t, substituter.Options{Backends: backends(c)})

	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan struct{})
	go func() {
		defer close(first)
		req, _ := parseRequest(http.MethodGet, p.NarInfoPath(), nil)
		s.ServeHTTP(httptest.NewRecorder(), req.WithContext(ctx))
	}()
	eventually(t, "the first lookup to reach the backend", func() bool { return len(c.fetchReferences()) == 1 })
	second := make(chan response)
	go func() { second <- get(t, s, p.NarInfoPath()) }()
	eventually(t, "the second request to wait", func() bool {
		v, _ := metricValue(t, s, `nixoci_cache_total{cache="narinfo",result="miss"}`)
		return v == 2
	})
	cancel()
	close(release)
	<-first
	if r := <-second; r.Code != 200 {
		t.Errorf("second request after the first client left: %d", r.Code)
	}
}

// TestHostilePaths: traversal, escapes and odd names are refused before
// any backend sees them.
func TestHostilePaths(t *testing.T) {
	l := newLayout(t)
	p := newTestPath(t, "hostile-1", "hostile", spec.CompressionZstd)
	p.store(t, l)
	c := &counting{Target: l}
	s, _ := newServer(t, substituter.Options{Backends: backends(c)})
	nar := strings.TrimPrefix(p.NarURLPath(), "/nar/")
	for _, tc := range []struct {
		path string
		want []int
	}{
		{"/../x", []int{400}},
		{"/../" + p.Hash + ".narinfo", []int{400}},
		{"/nar/..%2f", []int{400}},
		{"/nar/..%2f..%2fetc%2fpasswd", []int{400}},
		{"/nar/../" + p.Hash + ".narinfo", []int{400}},
		{"/nar/" + nar + "/..", []int{400}},
		{"/%2e%2e/x", []int{400}},
		{"/%2e%2e%2fetc%2fpasswd", []int{400}},
		{"/nar%2f" + nar, []int{400}},
		{"/nar/" + strings.Replace(nar, ".", "%2e", 1), []int{400}},
		{"/" + p.Hash + "%2enarinfo", []int{400}},
		{"/" + p.Hash + ".narinfo%00", []int{400, 404}},
		{"/%" + p.Hash + ".narinfo", []int{400}},
		{"//x", []int{400}},
		{"//" + p.Hash + ".narinfo", []int{400}},
		{"/nar//" + nar, []int{400}},
		{"/nar//etc/passwd", []int{400}},
		{"/./" + p.Hash + ".narinfo", []int{301, 307, 308, 400, 404}}, // a redirect to the clean path
		{"/nar/./" + nar, []int{301, 307, 308, 400, 404}},
		{"/" + strings.Repeat("a", 100000), []int{400, 404}},
		{"/" + strings.Repeat("a", 100000) + ".narinfo", []int{400, 404}},
		{"/nar/" + strings.Repeat("a", 100000) + ".nar.zst", []int{400, 404}},
		{"/" + strings.Repeat("x/", 1000) + p.Hash + ".narinfo", []int{400, 404}},
		{"/\u00e9" + p.Hash[2:] + ".narinfo", []int{400, 404}},
		{"/nix-cache-info/..", []int{400}},
		{"/" + p.Hash + ".narinfo?x=/../", []int{200}}, // a query is no path
	} {
		before := c.total()
		start := time.Now()
		// Parsed as a server parses the request line, and handled without
		// a client that would clean the path or follow redirects.
		// A request line net/http cannot parse is answered 400 by it.
		code := 400
		if req, err := parseRequest(http.MethodGet, tc.path, nil); err == nil {
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			code = rec.Code
		}
		if !containsInt(tc.want, code) {
			t.Errorf("GET %.80s = %d, want one of %v", tc.path, code, tc.want)
		}
		if code != 200 && c.total() != before {
			t.Errorf("GET %.80s reached the backend:\n%s", tc.path, c.String())
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("GET %.80s took %v", tc.path, d)
		}
	}
	// PUTs are refused before any backend too (uploads are off).
	before := c.total()
	for _, path := range []string{"/../x", "/nar/..%2fx", "//x", "/" + p.Hash + ".narinfo"} {
		if r := do(t, s, http.MethodPut, path, strings.NewReader("x")); r.Code != 400 && r.Code != 403 {
			t.Errorf("PUT %s = %d, want 400 or 403", path, r.Code)
		}
	}
	if c.total() != before {
		t.Errorf("PUTs reached the backend:\n%s", c.String())
	}
}

func containsInt(list []int, n int) bool {
	for _, x := range list {
		if x == n {
			return true
		}
	}
	return false
}
