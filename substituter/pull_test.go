package substituter_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/internal/serving"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/source"
	"github.com/nixoci/nixoci/spec"
	"github.com/nixoci/nixoci/substituter"
)

// upstreamKey plays cache.nixos.org's key in these tests.
var upstreamKey = testKey("upstream-1", 7)

// testUpstream is an http binary cache (a fixture cache directory behind
// a file server) whose requests are counted and can be faulted.
type testUpstream struct {
	*fixture.Cache
	srv *httptest.Server

	mu       sync.Mutex
	requests map[string]int // by URL path
	fault    func(w http.ResponseWriter, r *http.Request) bool
}

func newTestUpstream(t *testing.T) *testUpstream {
	u := &testUpstream{Cache: fixture.NewCache(t), requests: map[string]int{}}
	files := http.FileServer(http.Dir(u.Dir))
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.requests[r.URL.Path]++
		fault := u.fault
		u.mu.Unlock()
		if fault != nil && fault(w, r) {
			return
		}
		files.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// add stores a signed path of name (by upstreamKey unless key says
// otherwise) in the upstream.
func (u *testUpstream) add(t *testing.T, name string, comp spec.Compression, refs ...string) *narinfo.NarInfo {
	t.Helper()
	info := u.Add(name, "content of "+name, comp, refs...)
	if err := info.AddSignature(upstreamKey); err != nil {
		t.Fatal(err)
	}
	u.WriteInfo(info)
	return info
}

func (u *testUpstream) count(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.requests[path]
}

func (u *testUpstream) setFault(f func(w http.ResponseWriter, r *http.Request) bool) {
	u.mu.Lock()
	u.fault = f
	u.mu.Unlock()
}

// pullServer is a server over a layout that pulls through ups.
type pullServer struct {
	*substituter.Server
	l      *backend.Layout
	logs   *syncBuffer
	mu     sync.Mutex
	stored []substituter.StoredPath
}

func (p *pullServer) storedPaths() []substituter.StoredPath {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]substituter.StoredPath(nil), p.stored...)
}

func newPullServer(t *testing.T, opts substituter.Options, pull substituter.PullOptions, ups ...*testUpstream) *pullServer {
	t.Helper()
	p := &pullServer{l: fixture.Layout(t)}
	if opts.Backends == nil {
		opts.Backends = backendsWith(serving.BackendOptions{Timeout: 2 * time.Second}, p.l)
	}
	bc, err := serving.NewBlobCache(opts.Backends, serving.BlobCacheOptions{MaxBytes: 64 << 20, Dir: filepath.Join(t.TempDir(), "blobs")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bc.Close() })
	opts.BlobCache = bc
	for _, u := range ups {
		bc, err := source.OpenBinaryCache(u.srv.URL, u.srv.Client())
		if err != nil {
			t.Fatal(err)
		}
		pull.Upstreams = append(pull.Upstreams, substituter.Upstream{Cache: bc})
	}
	if pull.Keys == nil && !pull.Unverified {
		pull.Keys = []narinfo.PublicKey{upstreamKey.Public()}
	}
	opts.Pull = &pull
	opts.Stored = func(sp substituter.StoredPath) {
		p.mu.Lock()
		p.stored = append(p.stored, sp)
		p.mu.Unlock()
	}
	if opts.CatalogInterval == 0 {
		opts.CatalogInterval = -1
	}
	p.Server, p.logs = newServer(t, opts)
	t.Cleanup(func() { p.Close() })
	return p
}

// storedPath waits until the layout holds the path of info, and returns
// it.
func (p *pullServer) storedPath(t *testing.T, info *narinfo.NarInfo) artifact.PathArtifact {
	t.Helper()
	var art artifact.PathArtifact
	eventually(t, "the path "+info.StorePath+" stored", func() bool {
		var err error
		art, err = artifact.FetchPathByHash(context.Background(), p.l, info.HashPart())
		return err == nil
	})
	return art
}

// TestPullThrough: a path no backend has is served from the upstream,
// its narinfo with the upstream's signature unchanged (and serve's, as
// the upstream key is trusted), its NAR byte for byte; then it is stored
// in the backend as `push --from-cache` stores it, told to Stored, and
// served from the backend after that.
func TestPullThrough(t *testing.T) {
	up := newTestUpstream(t)
	base := up.add(t, "pt-base", spec.CompressionZstd)
	app := up.add(t, "pt-app", spec.CompressionXz, "pt-base")
	serveKey := testKey("serve-1", 9)
	s := newPullServer(t, substituter.Options{SignKeys: []narinfo.SecretKey{serveKey}, Prefetch: -1}, substituter.PullOptions{}, up)

	r := get(t, s, "/"+app.HashPart()+".narinfo")
	if r.Code != 200 {
		t.Fatalf("narinfo: %d %s", r.Code, r.Body)
	}
	served, err := narinfo.Parse(strings.NewReader(r.Body))
	if err != nil {
		t.Fatal(err)
	}
	if !upstreamKey.Public().Verify(served) || !serveKey.Public().Verify(served) {
		t.Errorf("served narinfo lacks the upstream's or serve's signature:\n%s", r.Body)
	}
	if served.URL != app.URL || served.FileHash != app.FileHash || served.NarHash != app.NarHash {
		t.Errorf("served narinfo\n%s\ndoes not name the upstream's NAR (%s)", r.Body, app.URL)
	}
	nar := get(t, s, "/"+served.URL)
	file, _ := os.ReadFile(filepath.Join(up.Dir, app.URL))
	if nar.Code != 200 || nar.Body != string(file) {
		t.Fatalf("NAR: %d, %d bytes, want the upstream's %d", nar.Code, len(nar.Body), len(file))
	}
	art := s.storedPath(t, app)
	if art.Info.NarHash != app.NarHash || art.NAR.Size != int64(app.FileSize) || !slicesEqual(art.Info.Sigs, app.Sigs) {
		t.Errorf("stored %+v, want the upstream's narinfo with its signatures", art.Info)
	}
	rc, err := s.l.Fetch(t.Context(), art.NAR)
	if err != nil {
		t.Fatal(err)
	}
	stored := new(bytes.Buffer)
	stored.ReadFrom(rc)
	rc.Close()
	if !bytes.Equal(stored.Bytes(), file) {
		t.Error("the stored NAR blob is not the upstream's file")
	}
	// The client substituted the root: its closure is completed (the
	// reference it did not ask for pulled too) and stored.
	eventually(t, "Stored told of both paths", func() bool { return len(s.storedPaths()) == 2 })
	for _, sp := range s.storedPaths() {
		if sp.Path.Info.StorePath != app.StorePath && sp.Path.Info.StorePath != base.StorePath || !strings.HasPrefix(sp.From, "upstream ") {
			t.Errorf("Stored(%s, %q)", sp.Path.Info.StorePath, sp.From)
		}
	}
	var cl *artifact.Closure
	eventually(t, "the closure of the root stored", func() bool {
		cl, err = artifact.ReadClosure(context.Background(), s.l, spec.PulledClosureTag(app.StorePath))
		return err == nil
	})
	eventually(t, "the closure counted (after its push record)", func() bool {
		v, _ := metricValue(t, s, `nixoci_upstream_closures_total`)
		return v == 1
	})
	if len(cl.Roots) != 1 || cl.Roots[0] != app.StorePath || len(cl.Members) != 2 {
		t.Errorf("closure %s: roots %v, %d members; want the root and its reference", spec.PulledClosureTag(app.StorePath), cl.Roots, len(cl.Members))
	}
	// From now on, served from the backend: no request upstream.
	before := up.count("/" + app.URL)
	if r := get(t, s, "/"+served.URL); r.Code != 200 || r.Body != string(file) {
		t.Fatalf("NAR again: %d", r.Code)
	}
	if up.count("/"+app.URL) != before {
		t.Error("a stored NAR was asked of the upstream again")
	}
	baseFile, _ := os.ReadFile(filepath.Join(up.Dir, base.URL))
	m := scrape(t, s)
	upName := `upstream="` + up.srv.URL + `"`
	for series, want := range map[string]float64{
		`nixoci_upstream_narinfos_total{result="found",` + upName + `}`: 2,
		`nixoci_upstream_nars_total{outcome="ok",` + upName + `}`:       2,
		`nixoci_upstream_stores_total{outcome="stored"}`:                2,
		`nixoci_upstream_bytes_total{` + upName + `}`:                   float64(len(file) + len(baseFile)),
		`nixoci_upstream_closures_total`:                                1,
	} {
		if m[series] != want {
			t.Errorf("%s = %v, want %v", series, m[series], want)
		}
	}
}

func slicesEqual(a, b []string) bool { return strings.Join(a, " ") == strings.Join(b, " ") }

// TestPullThroughRefused: upstream narinfos that are not what serve may
// serve are answered 502 (never 404), logged naming the upstream and the
// path, and nothing is stored.
func TestPullThroughRefused(t *testing.T) {
	other := testKey("other-1", 8)
	tests := []struct {
		name   string
		edit   func(*narinfo.NarInfo)
		resign bool
		log    string
	}{
		{"unsigned", func(n *narinfo.NarInfo) { n.Sigs = nil }, false, "no signature verifies"},
		{"signed by another key", func(n *narinfo.NarInfo) { n.Sigs = nil; n.AddSignature(other) }, false, "no signature verifies"},
		{"signature of other content", func(n *narinfo.NarInfo) { n.NarSize++ }, false, "no signature verifies"},
		{"another store directory", func(n *narinfo.NarInfo) { n.StorePath = "/other/store/" + filepath.Base(n.StorePath) }, true, "store directory"},
		{"URL on another host", func(n *narinfo.NarInfo) { n.URL = "http://elsewhere.test/" + n.URL }, true, "leaves the cache"},
		{"URL leaving the cache", func(n *narinfo.NarInfo) { n.URL = "../" + n.URL }, true, "leaves the cache"},
		{"bzip2", func(n *narinfo.NarInfo) { n.Compression = "bzip2" }, true, "Compression"},
		{"compressed without FileHash", func(n *narinfo.NarInfo) { n.FileHash, n.FileSize = "", 0 }, true, "FileHash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newTestUpstream(t)
			info := up.add(t, "refused", spec.CompressionZstd)
			bad := *info
			tt.edit(&bad)
			if tt.resign {
				bad.Sigs = nil
				if err := bad.AddSignature(upstreamKey); err != nil {
					t.Fatal(err)
				}
			}
			data, err := bad.Format()
			if err != nil {
				t.Fatal(err)
			}
			up.Write(info.HashPart()+".narinfo", data)
			s := newPullServer(t, substituter.Options{Prefetch: -1}, substituter.PullOptions{}, up)
			r := get(t, s, "/"+info.HashPart()+".narinfo")
			if r.Code != http.StatusBadGateway {
				t.Errorf("narinfo: %d, want 502", r.Code)
			}
			logs := s.logs.String()
			if !strings.Contains(logs, tt.log) || !strings.Contains(logs, up.srv.URL) || !strings.Contains(logs, info.HashPart()) {
				t.Errorf("log does not say %q naming the upstream and path:\n%s", tt.log, logs)
			}
			if up.count("/"+info.URL) != 0 {
				t.Error("the NAR of a refused narinfo was fetched")
			}
			if tags := layoutTagCount(t, s.l); tags != 0 {
				t.Errorf("%d tags stored", tags)
			}
		})
	}
}

func layoutTagCount(t *testing.T, l *backend.Layout) int {
	t.Helper()
	n := 0
	if err := l.Tags(context.Background(), "", func(tags []string) error { n += len(tags); return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPullThroughBadNAR: a NAR that is not what its signed narinfo says
// (another file under its FileHash, a NAR whose NarHash differs, a
// transfer cut for good) is never given whole to a client and never
// stored; the log names the upstream and the path.
func TestPullThroughBadNAR(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, up *testUpstream, info *narinfo.NarInfo)
		log   string
	}{
		{"file changed", func(t *testing.T, up *testUpstream, info *narinfo.NarInfo) {
			file, _ := os.ReadFile(filepath.Join(up.Dir, info.URL))
			file[len(file)/2] ^= 1
			up.Write(info.URL, file)
		}, "FileHash"},
		{"NarHash signed wrong", func(t *testing.T, up *testUpstream, info *narinfo.NarInfo) {
			info.NarHash = "sha256:" + nix32([]byte("another NAR"))
			info.Sigs = nil
			info.AddSignature(upstreamKey)
			up.WriteInfo(info)
		}, "NAR is"},
		{"reset mid-NAR", func(t *testing.T, up *testUpstream, info *narinfo.NarInfo) {
			up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path != "/"+info.URL {
					return false
				}
				w.Header().Set("Content-Length", "100000")
				w.WriteHeader(200)
				w.Write([]byte("partial"))
				panic(http.ErrAbortHandler)
			})
		}, "pulling a NAR from upstream failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newTestUpstream(t)
			info := up.add(t, "badnar", spec.CompressionZstd)
			tt.setup(t, up, info)
			s := newPullServer(t, substituter.Options{Prefetch: -1}, substituter.PullOptions{}, up, up)
			srv := httptest.NewServer(s)
			defer srv.Close()
			if r := get(t, s, "/"+info.HashPart()+".narinfo"); r.Code != 200 {
				t.Fatalf("narinfo: %d", r.Code)
			}
			resp, err := srv.Client().Get(srv.URL + "/" + info.URL)
			if err == nil {
				body := new(bytes.Buffer)
				_, err = body.ReadFrom(resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode == 200 {
					t.Fatalf("a bad NAR was served whole (%d bytes)", body.Len())
				}
			}
			eventually(t, "the failure logged", func() bool {
				logs := s.logs.String()
				return strings.Contains(logs, tt.log) && strings.Contains(logs, info.StorePath) && strings.Contains(logs, up.srv.URL)
			})
			if tags := layoutTagCount(t, s.l); tags != 0 {
				t.Errorf("%d tags stored", tags)
			}
		})
	}
}

// TestPullThroughFailures: an upstream failing for a path no backend has
// is a 5xx (never a 404 Nix would remember); a 404 upstream is a 404,
// remembered for the negative TTL; what the backend holds is served
// while the upstream is down; /healthz tells the upstreams apart.
func TestPullThroughFailures(t *testing.T) {
	up := newTestUpstream(t)
	info := up.add(t, "pf-upstream", spec.CompressionZstd)
	s := newPullServer(t, substituter.Options{Prefetch: -1, NegativeTTL: time.Hour}, substituter.PullOptions{}, up)
	local := newTestPath(t, "pf-local", "local", spec.CompressionZstd)
	local.store(t, s.l)

	missing := hashPart("pf-missing")
	if r := get(t, s, "/"+missing+".narinfo"); r.Code != 404 {
		t.Fatalf("a path nowhere: %d, want 404", r.Code)
	}
	if r := get(t, s, "/"+missing+".narinfo"); r.Code != 404 || up.count("/"+missing+".narinfo") != 1 {
		t.Errorf("a miss again: %d, %d upstream requests; want 404 from memory", r.Code, up.count("/"+missing+".narinfo"))
	}

	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return true
	})
	r := get(t, s, "/"+info.HashPart()+".narinfo")
	if r.Code < 500 {
		t.Errorf("upstream 503 for a path no backend has: %d, want 5xx", r.Code)
	}
	if r := get(t, s, local.NarInfoPath()); r.Code != 200 {
		t.Errorf("a backend path while the upstream is down: %d", r.Code)
	}
	if r := get(t, s, local.NarURLPath()); r.Code != 200 {
		t.Errorf("a backend NAR while the upstream is down: %d", r.Code)
	}
	if r := get(t, s, "/healthz"); r.Code != 200 || !strings.Contains(r.Body, "upstreams: degraded") {
		t.Errorf("/healthz with the upstream down: %d %q, want 200 naming the upstreams degraded", r.Code, r.Body)
	}
	if r := get(t, s, "/healthz/upstreams"); r.Code != 503 || !strings.Contains(r.Body, up.srv.URL) {
		t.Errorf("/healthz/upstreams with the upstream down: %d %q", r.Code, r.Body)
	}
	if v, _ := metricValue(t, s, `nixoci_upstream_up{upstream="`+up.srv.URL+`"}`); v != 0 {
		t.Errorf("nixoci_upstream_up = %v", v)
	}
}

// TestPullThroughOnce: many clients asking for one NAR at once cause one
// upstream fetch and one store.
func TestPullThroughOnce(t *testing.T) {
	up := newTestUpstream(t)
	info := up.add(t, "once", spec.CompressionXz)
	gate := make(chan struct{})
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/"+info.URL {
			<-gate // until every client asked
		}
		return false
	})
	s := newPullServer(t, substituter.Options{Prefetch: -1}, substituter.PullOptions{}, up)
	srv := httptest.NewServer(s)
	defer srv.Close()
	if r := get(t, s, "/"+info.HashPart()+".narinfo"); r.Code != 200 {
		t.Fatalf("narinfo: %d", r.Code)
	}
	file, _ := os.ReadFile(filepath.Join(up.Dir, info.URL))
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := srv.Client().Get(srv.URL + "/" + info.URL)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			body := new(bytes.Buffer)
			if _, err := body.ReadFrom(resp.Body); err != nil || !bytes.Equal(body.Bytes(), file) {
				t.Errorf("NAR: %d, %d bytes, %v", resp.StatusCode, body.Len(), err)
			}
		}()
	}
	eventually(t, "the upstream asked", func() bool { return up.count("/"+info.URL) == 1 })
	close(gate)
	wg.Wait()
	s.storedPath(t, info)
	if n := up.count("/" + info.URL); n != 1 {
		t.Errorf("the upstream was asked for the NAR %d times, want 1", n)
	}
	eventually(t, "the store counted", func() bool {
		v, _ := metricValue(t, s, `nixoci_upstream_stores_total{outcome="stored"}`)
		return v == 1
	})
	if n := len(s.storedPaths()); n != 1 {
		t.Errorf("stored %d times", n)
	}
}

// TestPullThroughUncompressed: an uncompressed NAR whose narinfo leaves
// out FileHash and FileSize (as servers that make narinfos on the fly
// do) is named by its NarHash.
func TestPullThroughUncompressed(t *testing.T) {
	up := newTestUpstream(t)
	info := up.add(t, "plain", spec.CompressionNone)
	bare := *info
	bare.FileHash, bare.FileSize = "", 0
	data, _ := bare.Format()
	up.Write(info.HashPart()+".narinfo", data)
	s := newPullServer(t, substituter.Options{Prefetch: -1}, substituter.PullOptions{}, up)
	r := get(t, s, "/"+info.HashPart()+".narinfo")
	if r.Code != 200 || !strings.Contains(r.Body, "FileHash: "+info.NarHash) {
		t.Fatalf("narinfo: %d\n%s", r.Code, r.Body)
	}
	served, _ := narinfo.Parse(strings.NewReader(r.Body))
	if r := get(t, s, "/"+served.URL); r.Code != 200 || uint64(len(r.Body)) != info.NarSize {
		t.Fatalf("NAR: %d, %d bytes", r.Code, len(r.Body))
	}
	s.storedPath(t, info)
}

// TestPullThroughUnverified: without keys and without the opt-out, New
// refuses; with the opt-out, an unsigned narinfo is served (and not
// signed by serve).
func TestPullThroughUnverified(t *testing.T) {
	up := newTestUpstream(t)
	info := up.Add("unsigned", "unsigned", spec.CompressionZstd)
	bc, _ := source.OpenBinaryCache(up.srv.URL, up.srv.Client())
	b := backends(fixture.Layout(t))
	blobs, err := serving.NewBlobCache(b, serving.BlobCacheOptions{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer blobs.Close()
	_, err = substituter.New(substituter.Options{Backends: b, BlobCache: blobs, Pull: &substituter.PullOptions{Upstreams: []substituter.Upstream{{Cache: bc}}}})
	if err == nil {
		t.Fatal("pull-through without keys or opt-out accepted")
	}
	serveKey := testKey("serve-1", 9)
	s := newPullServer(t, substituter.Options{Prefetch: -1, SignKeys: []narinfo.SecretKey{serveKey}}, substituter.PullOptions{Unverified: true}, up)
	r := get(t, s, "/"+info.HashPart()+".narinfo")
	if r.Code != 200 || strings.Contains(r.Body, "Sig:") {
		t.Errorf("unsigned narinfo with the opt-out: %d\n%s\nwant it served without signatures", r.Code, r.Body)
	}
}

// TestPullThroughPrefetch: when Nix asks for a path found upstream,
// serve walks its references at the upstream ahead of it, so Nix's next
// narinfos are answered from memory.
func TestPullThroughPrefetch(t *testing.T) {
	up := newTestUpstream(t)
	up.add(t, "pp-c", spec.CompressionZstd)
	up.add(t, "pp-b", spec.CompressionZstd, "pp-c")
	a := up.add(t, "pp-a", spec.CompressionZstd, "pp-b", "pp-c")
	s := newPullServer(t, substituter.Options{}, substituter.PullOptions{}, up)
	if r := get(t, s, "/"+a.HashPart()+".narinfo"); r.Code != 200 {
		t.Fatalf("narinfo: %d", r.Code)
	}
	for _, name := range []string{"pp-b", "pp-c"} {
		eventually(t, name+" fetched ahead", func() bool { return up.count("/"+hashPart(name)+".narinfo") == 1 })
	}
	// Asked of the upstream is not yet answered and remembered: wait for
	// the prefetcher to count both done.
	eventually(t, "both prefetches done", func() bool {
		closure, _ := metricValue(t, s, `nixoci_prefetched_narinfos_total{outcome="ok",via="closure"}`)
		refs, _ := metricValue(t, s, `nixoci_prefetched_narinfos_total{outcome="ok",via="references"}`)
		return closure+refs == 2
	})
	before, _ := metricValue(t, s, `nixoci_cache_total{cache="narinfo",result="hit"}`)
	for _, name := range []string{"pp-b", "pp-c"} {
		if r := get(t, s, "/"+hashPart(name)+".narinfo"); r.Code != 200 {
			t.Fatalf("%s: %d", name, r.Code)
		}
		if n := up.count("/" + hashPart(name) + ".narinfo"); n != 1 {
			t.Errorf("%s asked upstream %d times", name, n)
		}
	}
	if after, _ := metricValue(t, s, `nixoci_cache_total{cache="narinfo",result="hit"}`); after-before != 2 {
		t.Errorf("%v of 2 narinfos answered from memory", after-before)
	}
	// Narinfos alone (nix path-info) pull no NAR and store nothing.
	if n := len(s.storedPaths()); n != 0 {
		t.Errorf("%d paths stored for narinfo requests alone", n)
	}
	if v, _ := metricValue(t, s, `nixoci_upstream_bytes_total{upstream="`+up.srv.URL+`"}`); v != 0 {
		t.Errorf("%v bytes of NARs pulled for narinfo requests alone", v)
	}
}

// TestPullThroughUploadReference: an upload naming a reference only an
// upstream has (Nix skips uploading it: serve said it is here) is
// accepted, and the reference is pulled into the backend too, so the
// backend holds the uploaded path's closure.
func TestPullThroughUploadReference(t *testing.T) {
	up := newTestUpstream(t)
	dep := up.add(t, "upref-dep", spec.CompressionZstd)
	s := newPullServer(t, substituter.Options{Prefetch: -1, Upload: &substituter.UploadOptions{
		Credentials: testCredentials(t, testUser, testPassword), TempDir: t.TempDir(),
	}}, substituter.PullOptions{}, up)
	p := newTestPath(t, "upref-app", "app", spec.CompressionZstd)
	p.Info.References = []string{filepath.Base(dep.StorePath)}
	if r := put(t, s, p.NarURLPath(), p.File, goodAuth...); r.Code != 201 {
		t.Fatal(r.Code, r.Body)
	}
	if r := put(t, s, p.NarInfoPath(), []byte(narinfoText(t, p)), goodAuth...); r.Code != 201 {
		t.Fatalf("narinfo naming a reference only upstream: %d %s", r.Code, r.Body)
	}
	s.storedPath(t, dep)
}

// TestPullThroughNARWithoutNarinfo: a NAR asked for without its narinfo
// (Nix keeps narinfos for days; serve may have restarted) is fetched
// from the upstream by its name, checked against its digest, never given
// whole when wrong; one no upstream has is a 404.
func TestPullThroughNARWithoutNarinfo(t *testing.T) {
	up := newTestUpstream(t)
	good := up.add(t, "nonarinfo-good", spec.CompressionZstd)
	bad := up.add(t, "nonarinfo-bad", spec.CompressionXz)
	file, _ := os.ReadFile(filepath.Join(up.Dir, bad.URL))
	file[len(file)/2] ^= 1
	up.Write(bad.URL, file)
	s := newPullServer(t, substituter.Options{Prefetch: -1}, substituter.PullOptions{}, up)
	srv := httptest.NewServer(s)
	defer srv.Close()
	want, _ := os.ReadFile(filepath.Join(up.Dir, good.URL))
	if r := get(t, s, "/"+good.URL); r.Code != 200 || r.Body != string(want) {
		t.Errorf("NAR by name: %d, %d bytes; want the upstream's %d", r.Code, len(r.Body), len(want))
	}
	resp, err := srv.Client().Get(srv.URL + "/" + bad.URL)
	if err == nil {
		body := new(bytes.Buffer)
		_, err = body.ReadFrom(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Errorf("a NAR not matching its name was served whole: %d, %d bytes", resp.StatusCode, body.Len())
		}
	}
	missing := "nar/" + nix32([]byte("no such file")) + ".nar.xz"
	if r := get(t, s, "/"+missing); r.Code != 404 {
		t.Errorf("a NAR nowhere: %d, want 404", r.Code)
	}
}
