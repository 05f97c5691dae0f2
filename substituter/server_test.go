package substituter_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
	"github.com/nixoci/nixoci/substituter"
)

func TestNewNeedsBackend(t *testing.T) {
	if _, err := substituter.New(substituter.Options{}); err == nil {
		t.Fatal("New without backends succeeded")
	}
}

func TestNixCacheInfo(t *testing.T) {
	l := newLayout(t)
	for _, tc := range []struct {
		name string
		opts substituter.Options
		want string
	}{
		{"defaults", substituter.Options{}, "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"},
		{"configured", substituter.Options{Priority: 10, StoreDir: "/gnu/store"}, "StoreDir: /gnu/store\nWantMassQuery: 1\nPriority: 10\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Backends = backends(l)
			s, _ := newServer(t, tc.opts)
			r := get(t, s, "/nix-cache-info")
			if r.Code != 200 || r.Body != tc.want {
				t.Errorf("GET /nix-cache-info = %d %q, want 200 %q", r.Code, r.Body, tc.want)
			}
			if ct := r.Header.Get("Content-Type"); ct != "text/x-nix-cache-info" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
}

func TestNarInfo(t *testing.T) {
	l := newLayout(t)
	dep := newTestPath(t, "dep-1.0", "dep", spec.CompressionXz)
	app := newTestPath(t, "app-2.0", "app", spec.CompressionZstd, dep)
	dep.store(t, l)
	art := app.store(t, l)
	stored := storedNarInfo(t, l, art)

	s, _ := newServer(t, substituter.Options{Backends: backends(l)})
	srv := httptest.NewServer(s)
	defer srv.Close()

	resp, err := srv.Client().Get(srv.URL + app.NarInfoPath())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET narinfo: %d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/x-nix-narinfo" {
		t.Errorf("Content-Type %q, want text/x-nix-narinfo", ct)
	}
	if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(body)) {
		t.Errorf("Content-Length %q, body %d bytes", cl, len(body))
	}
	// Without signing keys the served narinfo is the stored one, byte for
	// byte.
	if string(body) != string(stored) {
		t.Errorf("served narinfo differs from the stored one:\nserved:\n%s\nstored:\n%s", body, stored)
	}
	got, err := narinfo.Parse(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("served narinfo does not parse: %v\n%s", err, body)
	}
	if got.StorePath != app.StorePath || got.URL != spec.NarURL(app.FileNix32(), spec.CompressionZstd) ||
		got.NarHash != app.Info.NarHash || got.FileHash != app.Info.FileHash || got.NarSize != uint64(len(app.NAR)) ||
		got.FileSize != uint64(len(app.File)) || len(got.References) != 1 || got.References[0] != baseName("dep-1.0") ||
		got.Deriver != app.Info.Deriver || got.System != "x86_64-linux" || got.Compression != "zstd" {
		t.Errorf("served narinfo %+v does not describe %+v", got, app.Info)
	}
	if !storedKey.Public().Verify(got) {
		t.Errorf("stored signature lost or invalid: %v", got.Sigs)
	}

	// HEAD: same headers, no body.
	req, _ := http.NewRequest(http.MethodHead, srv.URL+app.NarInfoPath(), nil)
	resp, err = srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	head, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(head) != 0 {
		t.Errorf("HEAD narinfo: %d with %d body bytes", resp.StatusCode, len(head))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/x-nix-narinfo" {
		t.Errorf("HEAD Content-Type %q", ct)
	}
	if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(body)) {
		t.Errorf("HEAD Content-Length %q, want %d", cl, len(body))
	}

	// The xz path.
	r := get(t, s, dep.NarInfoPath())
	if r.Code != 200 || !strings.Contains(r.Body, "Compression: xz\n") || !strings.Contains(r.Body, "URL: nar/"+dep.FileNix32()+".nar.xz\n") {
		t.Errorf("GET xz narinfo: %d\n%s", r.Code, r.Body)
	}
}

func TestNarInfoSigned(t *testing.T) {
	l := newLayout(t)
	app := newTestPath(t, "signed-1", "signed", spec.CompressionZstd)
	art := app.store(t, l)
	k1, k2 := testKey("serve-1", 7), testKey("serve-2", 8)
	s, _ := newServer(t, substituter.Options{Backends: backends(l), SignKeys: []narinfo.SecretKey{k1, k2},
		TrustedKeys: []narinfo.PublicKey{storedKey.Public()}})
	r := get(t, s, app.NarInfoPath())
	if r.Code != 200 {
		t.Fatalf("GET narinfo: %d %s", r.Code, r.Body)
	}
	got, err := narinfo.Parse(strings.NewReader(r.Body))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []narinfo.SecretKey{storedKey, k1, k2} {
		if !k.Public().Verify(got) {
			t.Errorf("no valid signature by %s in %v", k.Name, got.Sigs)
		}
	}
	if len(got.Sigs) != 3 {
		t.Errorf("Sigs %v, want the stored one and one per key", got.Sigs)
	}
	if testKey("other", 9).Public().Verify(got) {
		t.Error("Verify accepted a key that signed nothing")
	}
	// Apart from the signatures, it is the stored narinfo.
	stored, err := narinfo.Parse(strings.NewReader(string(storedNarInfo(t, l, art))))
	if err != nil {
		t.Fatal(err)
	}
	got.Sigs = got.Sigs[:1]
	a, _ := got.Format()
	b, _ := stored.Format()
	if string(a) != string(b) {
		t.Errorf("signed narinfo differs beyond its signatures:\n%s\nvs\n%s", a, b)
	}
	// A key already named in the stored signatures replaces it.
	s2, _ := newServer(t, substituter.Options{Backends: backends(l), SignKeys: []narinfo.SecretKey{storedKey}})
	r = get(t, s2, app.NarInfoPath())
	if n := strings.Count(r.Body, "Sig: "); n != 1 {
		t.Errorf("re-signing with the stored key gives %d Sig lines:\n%s", n, r.Body)
	}
}

func TestNotStoredHere(t *testing.T) {
	l := newLayout(t)
	app := newTestPath(t, "here-1", "here", spec.CompressionZstd)
	app.store(t, l)
	c := &counting{Target: l}
	s, _ := newServer(t, substituter.Options{Backends: backends(c)})
	for _, tc := range []struct {
		path    string
		want    int
		backend bool // may reach the backend
	}{
		{"/" + hashPart("absent") + ".narinfo", 404, true},
		{"/" + app.Hash + ".ls", 200, true}, // made from the NAR (listing_test.go)
		{"/" + app.Hash + ".narinfo.ls", 400, false},
		{"/log/" + baseName("x.drv"), 404, true},
		{"/log/x", 400, false},
		{"/realisations/x", 400, false},
		{"/" + strings.ToUpper(app.Hash) + ".narinfo", 404, false},
		{"/" + app.Hash[:31] + ".narinfo", 404, false},
		{"/" + app.Hash + "a.narinfo", 404, false},
		{"/" + app.Hash, 404, false},
		{"/index.html", 404, false},
		{"/", 404, false},
	} {
		before := c.total()
		r := get(t, s, tc.path)
		if r.Code != tc.want {
			t.Errorf("GET %s = %d, want %d", tc.path, r.Code, tc.want)
		}
		if !tc.backend && c.total() != before {
			t.Errorf("GET %s reached the backend:\n%s", tc.path, c.String())
		}
	}
	// HEAD of an absent narinfo is 404 too (Nix's fileExists).
	if r := do(t, s, http.MethodHead, "/"+hashPart("absent2")+".narinfo", nil); r.Code != 404 {
		t.Errorf("HEAD absent narinfo = %d", r.Code)
	}
	// Methods other than GET, HEAD and PUT are not allowed.
	for _, m := range []string{http.MethodPost, http.MethodDelete, "PATCH"} {
		if r := do(t, s, m, app.NarInfoPath(), nil); r.Code != http.StatusMethodNotAllowed {
			t.Errorf("%s narinfo = %d, want 405", m, r.Code)
		}
	}
}

// TestRealisationsNotFound: with ca-derivations, Nix asks for
// realisations/<drv hash>!<output>.doi; a substituter without them must say
// 404 (absent), since any other 4xx makes Nix treat the cache as failing.
func TestRealisationsNotFound(t *testing.T) {
	s, _ := newServer(t, substituter.Options{Backends: backends(newLayout(t))})
	p := "/realisations/sha256:" + strings.Repeat("ab", 32) + "!out.doi"
	if r := get(t, s, p); r.Code != 404 {
		t.Errorf("GET %s = %d, want 404", p, r.Code)
	}
}

func TestHealthz(t *testing.T) {
	s, _ := newServer(t, substituter.Options{Backends: backends(newLayout(t), newLayout(t))})
	if r := get(t, s, "/healthz"); r.Code != 200 || r.Body != "ok\n" {
		t.Errorf("GET /healthz = %d %q", r.Code, r.Body)
	}
	s, _ = newServer(t, substituter.Options{Backends: backends(newLayout(t), &failing{})})
	r := get(t, s, "/healthz")
	if r.Code != http.StatusServiceUnavailable || !strings.Contains(r.Body, "backend1") || strings.Contains(r.Body, "backend0") {
		t.Errorf("GET /healthz with a failing backend = %d %q, want 503 naming backend1 only", r.Code, r.Body)
	}
	if strings.Contains(r.Body, "connection refused") || strings.Contains(r.Body, "registry.test") {
		t.Errorf("GET /healthz echoes the backend's error: %q", r.Body)
	}
}

// TestMetrics: /metrics parses with the Prometheus text parser, has the
// Go and process collectors, and counts requests, backend operations and
// cache lookups with the labels of what was asked.
func TestMetrics(t *testing.T) {
	l := newLayout(t)
	app := newTestPath(t, "metrics-1", "metrics", spec.CompressionZstd)
	app.store(t, l)
	s, _ := newServer(t, substituter.Options{Backends: backends(l)})

	get(t, s, app.NarInfoPath())
	get(t, s, app.NarURLPath())
	get(t, s, "/"+hashPart("nope")+".narinfo")
	do(t, s, "BREW", "/nix-cache-info", nil)
	first := scrape(t, s)
	for _, want := range []string{
		`go_goroutines`,
		`process_resident_memory_bytes`,
		`nixoci_requests_total{method="GET",route="narinfo",status="200"}`,
		`nixoci_requests_total{method="GET",route="narinfo",status="404"}`,
		`nixoci_requests_total{method="GET",route="nar",status="200"}`,
		`nixoci_requests_total{method="other",route="/nix-cache-info",status="405"}`,
		`nixoci_request_seconds_count{route="narinfo"}`,
		`nixoci_response_bytes_total{route="nar"}`,
		`nixoci_backend_requests_total{op="narinfo",outcome="ok"}`,
		`nixoci_backend_requests_total{op="narinfo",outcome="not_found"}`,
		`nixoci_backend_requests_total{op="fetch_blob",outcome="ok"}`,
		`nixoci_backend_seconds_count{op="narinfo"}`,
		`nixoci_cache_total{cache="narinfo",result="miss"}`,
		`nixoci_cache_total{cache="blob",result="hit"}`,
		`nixoci_inflight_requests`,
		`nixoci_cached_narinfos`,
	} {
		if _, ok := first[want]; !ok {
			t.Errorf("metrics lack %s", want)
		}
	}
	for k, want := range map[string]float64{
		`nixoci_requests_total{method="GET",route="narinfo",status="200"}`:           1,
		`nixoci_requests_total{method="GET",route="narinfo",status="404"}`:           1,
		`nixoci_requests_total{method="other",route="/nix-cache-info",status="405"}`: 1,
		`nixoci_request_seconds_count{route="narinfo"}`:                              2,
		`nixoci_backend_requests_total{op="narinfo",outcome="ok"}`:                   1,
		`nixoci_backend_requests_total{op="narinfo",outcome="not_found"}`:            1,
		`nixoci_backend_seconds_count{op="narinfo"}`:                                 2,
		`nixoci_response_bytes_total{route="nar"}`:                                   float64(len(app.File)),
		`nixoci_inflight_requests`:                                                   1, // this scrape
		`nixoci_cached_narinfos`:                                                     2, // one found, one absent
	} {
		if first[k] != want {
			t.Errorf("%s = %v, want %v", k, first[k], want)
		}
	}

	// Counters only go up.
	get(t, s, app.NarInfoPath())
	get(t, s, app.NarInfoPath())
	second := scrape(t, s)
	for k, v := range first {
		if strings.HasPrefix(k, "nixoci_") && !strings.HasPrefix(k, "nixoci_inflight") && !strings.HasPrefix(k, "nixoci_cached") && second[k] < v {
			t.Errorf("%s went down: %v -> %v", k, v, second[k])
		}
	}
	for k, delta := range map[string]float64{
		`nixoci_requests_total{method="GET",route="narinfo",status="200"}`:  2,
		`nixoci_cache_total{cache="narinfo",result="hit"}`:                  2,
		`nixoci_requests_total{method="GET",route="/metrics",status="200"}`: 1,
	} {
		if second[k] != first[k]+delta {
			t.Errorf("%s: %v -> %v, want +%v", k, first[k], second[k], delta)
		}
	}
}

// TestMetricsMethodCardinality: a client choosing arbitrary request
// methods must not grow /metrics (and the server's memory) without bound.
func TestMetricsMethodCardinality(t *testing.T) {
	s, _ := newServer(t, substituter.Options{Backends: backends(newLayout(t))})
	before := strings.Count(get(t, s, "/metrics").Body, "\n")
	for i := range 200 {
		do(t, s, "M"+strconv.Itoa(i), "/nix-cache-info", nil)
	}
	after := strings.Count(get(t, s, "/metrics").Body, "\n")
	if after-before > 20 {
		t.Errorf("200 requests with made-up methods added %d lines to /metrics", after-before)
	}
}

func TestAccessLog(t *testing.T) {
	l := newLayout(t)
	s, logs := newServer(t, substituter.Options{Backends: backends(l), AccessLog: true})
	get(t, s, "/nix-cache-info", "Authorization", "Bearer sekrit-token", "Cookie", "sekrit-cookie")
	out := logs.String()
	if !strings.Contains(out, "path=/nix-cache-info") || !strings.Contains(out, "status=200") {
		t.Errorf("access log lacks the request:\n%s", out)
	}
	if strings.Contains(out, "sekrit") {
		t.Errorf("access log shows request headers:\n%s", out)
	}
	// Without AccessLog, successful requests are not logged.
	s, logs = newServer(t, substituter.Options{Backends: backends(l)})
	get(t, s, "/nix-cache-info")
	if out := logs.String(); out != "" {
		t.Errorf("logged without AccessLog:\n%s", out)
	}
}
