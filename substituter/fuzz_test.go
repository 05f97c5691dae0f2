package substituter_test

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
	"github.com/nixoci/nixoci/substituter"
)

var (
	// The only request paths that may reach a backend.
	wellFormedNarInfo = regexp.MustCompile(`^/[0-9a-df-np-sv-z]{32}\.narinfo$`)
	wellFormedNAR     = regexp.MustCompile(`^/nar/[0-9a-df-np-sv-z]{52}\.nar(\.xz|\.zst)?$`)
	// Files beyond narinfos and NARs (SPEC.md section 12).
	wellFormedFile = regexp.MustCompile(`^/([0-9a-df-np-sv-z]{32}\.ls|log/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]*\.drv|` +
		`realisations/sha256:[0-9a-f]{64}![A-Za-z0-9+_?=-][A-Za-z0-9+._?=-]*\.doi|` +
		`build-trace-v2/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]*\.drv/[A-Za-z0-9+_?=-][A-Za-z0-9+._?=-]*\.doi|debuginfo/[0-9a-f]{40}(\.debug)?)$`)
	// What a backend may be asked for.
	wellFormedTag    = regexp.MustCompile(`^([0-9a-df-np-sv-z]{32}(\.ls|\.log)?|debuginfo\.[0-9a-f]{40}|realisation\.[0-9a-f]{64})$`)
	wellFormedDigest = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// fuzzMethods are the request kinds FuzzServeHTTP sends, by method byte.
var fuzzMethods = []struct {
	method string
	auth   bool
}{
	{http.MethodGet, false},
	{http.MethodHead, false},
	{http.MethodPut, false},
	{http.MethodPut, true},
}

// fuzzAllowed are the statuses a healthy server may answer with.
var fuzzAllowed = map[int]bool{
	200: true, 201: true, 204: true,
	301: true, 307: true, 308: true,
	400: true, 401: true, 404: true, 405: true, 409: true, 413: true, 415: true,
}

// fuzzPath is the one store path in the fuzzed server's layout.
func fuzzPath(t testing.TB) *testPath {
	return newTestPath(t, "fuzz-1.0", "fuzz", spec.CompressionZstd)
}

// FuzzServeHTTP sends arbitrary request targets (GET, HEAD, PUT with and
// without credentials, arbitrary PUT bodies) to a server over a healthy
// layout holding one path: it must never panic or fail with 5xx, answer
// only with expected statuses, and let only well-formed narinfo and NAR
// names reach the backend.
func FuzzServeHTTP(f *testing.F) {
	l := newLayout(f)
	p := fuzzPath(f)
	p.store(f, l)
	c := &counting{Target: l}
	logger, _ := testLogger()
	s, err := substituter.New(substituter.Options{
		Backends: backends(c),
		Logger:   logger,
		Upload: &substituter.UploadOptions{
			Credentials: testCredentials(f, testUser, testPassword),
			TempDir:     f.TempDir(),
			MaxNARSize:  1 << 20,
		},
	})
	if err != nil {
		f.Fatal(err)
	}
	info := narinfoText(f, p)
	for _, seed := range []struct {
		method uint8
		target string
		body   string
	}{
		{0, "/nix-cache-info", ""},
		{0, p.NarInfoPath(), ""},
		{1, p.NarInfoPath(), ""},
		{0, p.NarURLPath(), ""},
		{1, p.NarURLPath(), ""},
		{0, "/nar/" + p.FileNix32() + ".nar.xz", ""},
		{0, "/" + hashPart("absent") + ".narinfo", ""},
		{0, "/" + p.Hash + ".ls", ""},
		{0, "/log/" + baseName("x.drv"), ""},
		{0, "/realisations/sha256:00!out.doi", ""},
		{0, "/realisations/sha256:" + strings.Repeat("ab", 32) + "!out.doi", ""},
		{0, "/build-trace-v2/" + baseName("x.drv") + "/out.doi", ""},
		{0, "/build-trace-v2/../../etc/passwd", ""},
		{0, "/debuginfo/" + strings.Repeat("ab", 20) + ".debug", ""},
		{3, "/log/" + baseName("x.drv"), "a build log\n"},
		{3, "/log/..%2fx.drv", "x"},
		{3, "/" + p.Hash + ".ls", "{\"version\":1,\"root\":{\"type\":\"regular\",\"size\":1}}"},
		{3, "/" + p.Hash + ".ls", "not json"},
		{3, "/realisations/sha256:" + strings.Repeat("ab", 32) + "!out.doi", "{}"},
		{3, "/debuginfo/" + strings.Repeat("ab", 20), "{\"archive\":\"../../etc\",\"member\":\"x\"}"},
		{0, "/../etc/passwd", ""},
		{0, "/nar/..%2f..%2fetc%2fpasswd", ""},
		{0, "//" + p.Hash + ".narinfo", ""},
		{0, "/./" + p.Hash + ".narinfo", ""},
		{0, "/%2e%2e/x", ""},
		{0, "/healthz", ""},
		{0, "/metrics", ""},
		{0, "/nar/" + strings.Repeat("z", 52) + ".nar", ""},
		{0, "http://other.host" + p.NarInfoPath(), ""},
		{0, "*", ""},
		{2, p.NarInfoPath(), info},
		{3, p.NarInfoPath(), info},
		{3, "/" + hashPart("other") + ".narinfo", info},
		{3, p.NarURLPath(), "not a nar"},
		{3, "/nix-cache-info", "StoreDir: /nix/store\n"},
		{3, "/nar/" + nix32([]byte("x")) + ".nar", "x"},
		{3, "/nar/../x", ""},
	} {
		f.Add(seed.method, seed.target, []byte(seed.body))
	}

	f.Fuzz(func(t *testing.T, method uint8, target string, body []byte) {
		if strings.ContainsAny(target, " \r\n") || len(body) > 1<<16 {
			return // not one request line
		}
		m := fuzzMethods[int(method)%len(fuzzMethods)]
		var header []string
		if m.auth {
			header = goodAuth
		}
		req, err := parseRequest(m.method, target, strings.NewReader(string(body)), header...)
		if err != nil {
			return // net/http refuses it before any handler
		}
		c.reset()
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		code := rec.Code

		if code >= 500 {
			t.Fatalf("%s %q = %d on a healthy layout: %s", m.method, target, code, rec.Body)
		}
		if !fuzzAllowed[code] {
			t.Fatalf("%s %q = %d, not an expected status", m.method, target, code)
		}
		wellFormed := req.URL.RawPath == "" && (wellFormedNarInfo.MatchString(req.URL.Path) || wellFormedNAR.MatchString(req.URL.Path)) ||
			wellFormedFile.MatchString(req.URL.Path)
		if n := c.total(); n > 0 && !wellFormed {
			t.Fatalf("%s %q (path %q) reached the backend:\n%s", m.method, target, req.URL.Path, c.String())
		}
		for _, ref := range c.fetchReferences() {
			if !wellFormedTag.MatchString(ref) {
				t.Fatalf("%s %q asked the backend for tag %q", m.method, target, ref)
			}
		}
		for _, d := range c.resolveBlobs() {
			if !wellFormedDigest.MatchString(d.String()) {
				t.Fatalf("%s %q asked the backend for blob %q", m.method, target, d)
			}
		}
		if m.method == http.MethodPut && !m.auth && code >= 200 && code < 300 {
			t.Fatalf("PUT %q without credentials = %d", target, code)
		}
		if code == 200 && m.method == http.MethodGet {
			switch {
			case wellFormedNarInfo.MatchString(req.URL.Path):
				if _, err := narinfo.Parse(rec.Body); err != nil {
					t.Fatalf("GET %q: served narinfo does not parse: %v", target, err)
				}
			case wellFormedNAR.MatchString(req.URL.Path) && req.URL.Path == p.NarURLPath():
				if rec.Body.String() != string(p.File) {
					t.Fatalf("GET %q: wrong NAR bytes", target)
				}
			}
		}
	})
}
