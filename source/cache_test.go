package source_test

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/source"
	"github.com/nixoci/nixoci/spec"
)

// Both sources are what artifact.Push reads from.
var (
	_ artifact.Source = (*source.BinaryCache)(nil)
	_ artifact.Source = (*source.LocalStore)(nil)
)

// Synthetic store paths and caches, shared with the other packages' tests.
var (
	nix32        = fixture.Nix32
	storePath    = fixture.StorePath
	makeNAR      = fixture.NAR
	compress     = fixture.Compress
	closureCache = fixture.ClosureCache
	openCache    = fixture.OpenCache
)

func formatted(t testing.TB, info *narinfo.NarInfo) string {
	t.Helper()
	b, err := info.Format()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkClosure compares a closure with the cache's narinfos of names.
func checkClosure(t *testing.T, c *fixture.Cache, got []*narinfo.NarInfo, names ...string) {
	t.Helper()
	var gotPaths, wantPaths []string
	for _, info := range got {
		gotPaths = append(gotPaths, info.StorePath)
		if want, ok := c.Infos[info.StorePath]; !ok {
			t.Errorf("closure has %s, which is not in the cache", info.StorePath)
		} else if g, w := formatted(t, info), formatted(t, want); g != w {
			t.Errorf("%s: narinfo\n%s\nwant\n%s", info.StorePath, g, w)
		}
	}
	for _, n := range names {
		wantPaths = append(wantPaths, storePath(n))
	}
	slices.Sort(gotPaths)
	slices.Sort(wantPaths)
	if !slices.Equal(gotPaths, wantPaths) {
		t.Errorf("closure = %v, want %v", gotPaths, wantPaths)
	}
}

func TestBinaryCacheClosure(t *testing.T) {
	c := closureCache(t)
	ctx := t.Context()
	for _, jobs := range []int{0, 1} {
		bc := openCache(t, c.URL(), nil)
		bc.Jobs = jobs
		got, err := bc.Closure(ctx, []string{storePath("app")})
		if err != nil {
			t.Fatal(err)
		}
		checkClosure(t, c, got, "app", "lib", "base", "data", "twin")

		got, err = bc.Closure(ctx, []string{storePath("lib"), storePath("data")})
		if err != nil {
			t.Fatal(err)
		}
		checkClosure(t, c, got, "lib", "base", "data")
	}
}

func TestBinaryCacheClosureErrors(t *testing.T) {
	c := closureCache(t)
	ctx := t.Context()

	// A reference the cache does not have.
	c.Add("broken", "broken", spec.CompressionZstd, "ghost")
	_, err := openCache(t, c.URL(), nil).Closure(ctx, []string{storePath("broken")})
	if !errors.Is(err, source.ErrNotInCache) {
		t.Errorf("missing reference: error = %v, want ErrNotInCache", err)
	} else if !strings.Contains(err.Error(), storePath("ghost")) {
		t.Errorf("missing reference: error %q does not name %s", err, storePath("ghost"))
	}

	// A narinfo describing another path than its name says.
	impostor := *c.Infos[storePath("lib")]
	data, _ := impostor.Format()
	c.Write(spec.PathTag(storePath("impostor"))+".narinfo", data)
	if _, err := openCache(t, c.URL(), nil).Closure(ctx, []string{storePath("impostor")}); err == nil || !strings.Contains(err.Error(), "describes") {
		t.Errorf("narinfo for another path: error = %v", err)
	}

	// A narinfo without FileHash cannot be stored unchanged.
	nofh := *c.Infos[storePath("unrelated")]
	nofh.FileHash, nofh.FileSize = "", 0
	c.WriteInfo(&nofh)
	if _, err := openCache(t, c.URL(), nil).Closure(ctx, []string{nofh.StorePath}); err == nil || !strings.Contains(err.Error(), "FileHash") {
		t.Errorf("narinfo without FileHash: error = %v", err)
	}

	// A narinfo that does not parse.
	c.Write(spec.PathTag(storePath("garbled"))+".narinfo", []byte("StorePath: nonsense\n"))
	if _, err := openCache(t, c.URL(), nil).Closure(ctx, []string{storePath("garbled")}); err == nil || errors.Is(err, source.ErrNotInCache) {
		t.Errorf("garbled narinfo: error = %v, want a parse error", err)
	}
}

func TestBinaryCacheWriteNAR(t *testing.T) {
	c := closureCache(t)
	bc := openCache(t, c.URL(), nil)
	for _, name := range []string{"app", "lib", "data", "base"} {
		info := c.Infos[storePath(name)]
		var out bytes.Buffer
		comp, err := bc.WriteNAR(t.Context(), info, &out)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if string(comp) != info.Compression {
			t.Errorf("%s: compression %q, want %q", name, comp, info.Compression)
		}
		file, err := os.ReadFile(filepath.Join(c.Dir, info.URL))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), file) {
			t.Errorf("%s: WriteNAR wrote %d bytes that are not the cache's %d-byte file", name, out.Len(), len(file))
		}
	}
}

// badNAR is a cache entry whose narinfo is consistent with its file
// (FileHash and FileSize match) but whose content is wrong in some way.
func TestBinaryCacheWriteNARRejects(t *testing.T) {
	c := closureCache(t)
	good := c.Infos[storePath("app")]
	goodFile, err := os.ReadFile(filepath.Join(c.Dir, good.URL))
	if err != nil {
		t.Fatal(err)
	}
	nar := makeNAR(t, "application")
	// A copy of the good file outside the cache directory, which a URL
	// escaping the directory would reach.
	if err := os.WriteFile(filepath.Join(filepath.Dir(c.Dir), "escaped.nar.zst"), goodFile, 0o644); err != nil {
		t.Fatal(err)
	}

	edited := func(edit func(*narinfo.NarInfo)) *narinfo.NarInfo {
		info := *good
		edit(&info)
		return &info
	}
	// withFile stores file under a fresh URL and returns a narinfo whose
	// FileHash/FileSize describe it, with NarHash/NarSize of nar.
	withFile := func(name string, file []byte, comp spec.Compression) *narinfo.NarInfo {
		return c.AddFile(name, nar, file, comp)
	}
	appended := append(bytes.Clone(goodFile), []byte("trailing garbage")...)

	tests := []struct {
		name string
		info *narinfo.NarInfo
		want error  // sentinel the error must wrap, or nil
		msg  string // substring of the error, or ""
	}{
		{"FileHash mismatch", edited(func(n *narinfo.NarInfo) { n.FileHash = "sha256:" + nix32([]byte("other")) }), source.ErrHashMismatch, "FileHash"},
		{"NarHash mismatch", edited(func(n *narinfo.NarInfo) { n.NarHash = "sha256:" + nix32([]byte("other")) }), source.ErrHashMismatch, ""},
		{"NarSize mismatch", edited(func(n *narinfo.NarInfo) { n.NarSize++ }), source.ErrHashMismatch, ""},
		{"URL leaving the cache", edited(func(n *narinfo.NarInfo) { n.URL = "../escaped.nar.zst" }), nil, "leaves the cache directory"},
		{"URL leaving through nar/", edited(func(n *narinfo.NarInfo) { n.URL = "nar/../../escaped.nar.zst" }), nil, "leaves the cache directory"},
		{"absolute URL path", edited(func(n *narinfo.NarInfo) { n.URL = filepath.Join(filepath.Dir(c.Dir), "escaped.nar.zst") }), nil, "leaves the cache directory"},
		{"file URL", edited(func(n *narinfo.NarInfo) { n.URL = "file://" + filepath.Join(filepath.Dir(c.Dir), "escaped.nar.zst") }), nil, "leaves the cache directory"},
		{"missing file", edited(func(n *narinfo.NarInfo) { n.URL = "nar/missing.nar.zst" }), source.ErrNotInCache, ""},
		{"unknown compression", edited(func(n *narinfo.NarInfo) { n.Compression = "bzip2" }), nil, "bzip2"},
		{"data after the NAR, uncompressed", withFile("tail-none", append(bytes.Clone(nar), "junk"...), spec.CompressionNone), nil, "after the end of the NAR"},
		// (A zstd frame that records its content size is refused for it.)
		{"data after the NAR, zstd", withFile("tail-zstd", compress(t, append(bytes.Clone(nar), "junk"...), spec.CompressionZstd), spec.CompressionZstd), nil, "more than the"},
		{"data after the NAR, xz", withFile("tail-xz", compress(t, append(bytes.Clone(nar), "junk"...), spec.CompressionXz), spec.CompressionXz), nil, "after the end of the NAR"},
		{"truncated file", withFile("truncated", goodFile[:len(goodFile)/2], spec.CompressionZstd), nil, ""},
		{"not a NAR", withFile("notnar", compress(t, []byte("this is not a NAR archive at all, just text"), spec.CompressionZstd), spec.CompressionZstd), nil, ""},
		{"zstd flag on an xz file", withFile("wrongcodec", compress(t, nar, spec.CompressionXz), spec.CompressionZstd), nil, ""},
		{"garbage after the zstd frame", withFile("appended", appended, spec.CompressionZstd), nil, ""},
		{"garbage after the xz stream", withFile("appended-xz", append(compress(t, nar, spec.CompressionXz), "trailing garbage"...), spec.CompressionXz), nil, ""},
	}
	bc := openCache(t, c.URL(), nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := bc.WriteNAR(t.Context(), tt.info, &out)
			if err == nil {
				t.Fatalf("WriteNAR succeeded (%d bytes)", out.Len())
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error = %v, want %v", err, tt.want)
			}
			if tt.msg != "" && !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not contain %q", err, tt.msg)
			}
		})
	}
}

// TestBinaryCacheWriteNARConcatenated: files Nix reads although they are
// not one plain stream: xz stream padding and concatenated streams (what
// nixoci's own xz writer produces for large NARs).
func TestBinaryCacheWriteNARConcatenated(t *testing.T) {
	c := fixture.NewCache(t)
	nar := makeNAR(t, "concatenated")
	tests := []struct {
		name string
		comp spec.Compression
		file []byte
	}{
		{"xz padding", spec.CompressionXz, append(compress(t, nar, spec.CompressionXz), 0, 0, 0, 0)},
		{"xz streams", spec.CompressionXz, append(compress(t, nar[:40], spec.CompressionXz), compress(t, nar[40:], spec.CompressionXz)...)},
		{"zstd frames", spec.CompressionZstd, append(compress(t, nar[:40], spec.CompressionZstd), compress(t, nar[40:], spec.CompressionZstd)...)},
	}
	bc := openCache(t, c.URL(), nil)
	for _, tt := range tests {
		info := c.AddFile(strings.ReplaceAll(tt.name, " ", "-"), nar, tt.file, tt.comp)
		var out bytes.Buffer
		if _, err := bc.WriteNAR(t.Context(), info, &out); err != nil {
			t.Errorf("%s: %v", tt.name, err)
		} else if !bytes.Equal(out.Bytes(), tt.file) {
			t.Errorf("%s: output differs from the file", tt.name)
		}
	}
}

func TestBinaryCacheHTTP(t *testing.T) {
	c := closureCache(t)
	srv := httptest.NewServer(http.FileServer(http.Dir(c.Dir)))
	defer srv.Close()
	ctx := t.Context()
	for _, u := range []string{srv.URL, srv.URL + "/"} {
		bc := openCache(t, u, srv.Client())
		got, err := bc.Closure(ctx, []string{storePath("app")})
		if err != nil {
			t.Fatal(err)
		}
		checkClosure(t, c, got, "app", "lib", "base", "data", "twin")
		for _, info := range got {
			var out bytes.Buffer
			if _, err := bc.WriteNAR(ctx, info, &out); err != nil {
				t.Fatalf("%s: %v", info.StorePath, err)
			}
			file, _ := os.ReadFile(filepath.Join(c.Dir, info.URL))
			if !bytes.Equal(out.Bytes(), file) {
				t.Errorf("%s: WriteNAR over HTTP differs from the file", info.StorePath)
			}
		}
		if _, err := bc.NarInfo(ctx, storePath("ghost")); !errors.Is(err, source.ErrNotInCache) {
			t.Errorf("404 narinfo: error = %v, want ErrNotInCache", err)
		}
	}

	// A cache below a path prefix.
	mux := http.NewServeMux()
	mux.Handle("/cache/", http.StripPrefix("/cache/", http.FileServer(http.Dir(c.Dir))))
	sub := httptest.NewServer(mux)
	defer sub.Close()
	got, err := openCache(t, sub.URL+"/cache", sub.Client()).Closure(ctx, []string{storePath("lib")})
	if err != nil {
		t.Fatal(err)
	}
	checkClosure(t, c, got, "lib", "base")
}

// TestBinaryCacheHTTPErrors: what each status means. A transient one
// (5xx, 429) is asked again; here the second answer is 404.
func TestBinaryCacheHTTPErrors(t *testing.T) {
	tests := []struct {
		status      int
		notInCache  bool
		requests    int
		description string
	}{
		{http.StatusNotFound, true, 1, "404"},
		{http.StatusGone, true, 1, "410"},
		{http.StatusForbidden, true, 1, "403 (S3 for a missing key)"},
		{http.StatusInternalServerError, true, 2, "500, then 404"},
		{http.StatusBadGateway, true, 2, "502, then 404"},
		{http.StatusTooManyRequests, true, 2, "429, then 404"},
		{http.StatusUnauthorized, false, 1, "401"},
	}
	for _, tt := range tests {
		requests := 0
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if requests++; requests > 1 {
				http.NotFound(w, r)
				return
			}
			http.Error(w, "nope", tt.status)
		}))
		_, err := openCache(t, srv.URL, srv.Client()).NarInfo(t.Context(), storePath("app"))
		srv.Close()
		if err == nil {
			t.Errorf("%s: no error", tt.description)
			continue
		}
		if requests != tt.requests {
			t.Errorf("%s: %d requests, want %d", tt.description, requests, tt.requests)
		}
		if errors.Is(err, source.ErrNotInCache) != tt.notInCache {
			t.Errorf("%s: error %v: errors.Is(ErrNotInCache) = %v, want %v", tt.description, err, !tt.notInCache, tt.notInCache)
		}
		if !strings.Contains(err.Error(), spec.PathTag(storePath("app"))+".narinfo") {
			t.Errorf("%s: error %q does not name the narinfo", tt.description, err)
		}
	}
}

// TestBinaryCacheHTTPResumes: a NAR download cut off half-way is resumed
// with a Range request from where it stopped, and the NAR is whole.
func TestBinaryCacheHTTPResumes(t *testing.T) {
	c := closureCache(t)
	files := http.FileServer(http.Dir(c.Dir))
	var mu sync.Mutex
	cut := map[string]bool{}
	var ranges []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		first := strings.HasPrefix(r.URL.Path, "/nar/") && !cut[r.URL.Path]
		cut[r.URL.Path] = true
		if rg := r.Header.Get("Range"); rg != "" {
			ranges = append(ranges, rg)
		}
		mu.Unlock()
		if !first {
			files.ServeHTTP(w, r)
			return
		}
		data, err := os.ReadFile(filepath.Join(c.Dir, filepath.FromSlash(r.URL.Path)))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data[:len(data)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the connection drops mid-body
	}))
	defer srv.Close()
	bc := openCache(t, srv.URL, srv.Client())
	infos, err := bc.Closure(t.Context(), []string{storePath("app")})
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range infos {
		var out bytes.Buffer
		if _, err := bc.WriteNAR(t.Context(), info, &out); err != nil {
			t.Fatalf("%s: %v", info.StorePath, err)
		}
		file, _ := os.ReadFile(filepath.Join(c.Dir, info.URL))
		if !bytes.Equal(out.Bytes(), file) {
			t.Errorf("%s: resumed NAR differs from the file", info.StorePath)
		}
	}
	if len(ranges) == 0 || !strings.HasPrefix(ranges[0], "bytes=") {
		t.Errorf("no Range request resumed the downloads: %q", ranges)
	}
}

func TestOpenBinaryCache(t *testing.T) {
	for _, bad := range []string{"file://", "s3://bucket", "/tmp/cache", "ssh://host", "http://[::1"} {
		if _, err := source.OpenBinaryCache(bad, nil); err == nil {
			t.Errorf("OpenBinaryCache(%q) succeeded", bad)
		}
	}
	tests := []struct{ url, want string }{
		{"file:///tmp/cache", "binary cache file:///tmp/cache"},
		{"file:///tmp/cache/", "binary cache file:///tmp/cache"},
		{"https://cache.example/sub?x=1#f", "binary cache https://cache.example/sub"},
	}
	for _, tt := range tests {
		bc, err := source.OpenBinaryCache(tt.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := bc.String(); got != tt.want {
			t.Errorf("OpenBinaryCache(%q).String() = %q, want %q", tt.url, got, tt.want)
		}
	}
}

// TestOpenBinaryCacheFileHost: in "file://tmp/cache" the "tmp" is a host,
// not part of the directory; silently reading /cache instead is wrong.
func TestOpenBinaryCacheFileHost(t *testing.T) {
	for _, u := range []string{"file://tmp/cache", "file://example.com/srv/cache"} {
		if bc, err := source.OpenBinaryCache(u, nil); err == nil {
			t.Errorf("OpenBinaryCache(%q) = %s, want an error", u, bc)
		}
	}
}

func TestBinaryCacheResolveRoot(t *testing.T) {
	bc := openCache(t, "file:///nonexistent", nil)
	app := storePath("app")
	dir := t.TempDir()
	result := filepath.Join(dir, "result")
	// The target need not exist: the cache, not this machine, has it.
	if err := os.Symlink(app, result); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, nil, 0o644)

	tests := []struct {
		arg, want string
		ok        bool
	}{
		{app, app, true},
		{app + "/", app, true},
		{result, app, true},
		{plain, "", false},
		{"/nix/store/short", "", false},
		{"/nix/store/" + strings.Repeat("e", 32) + "-x", "", false}, // 'e' is not nix-base32
		{"hello", "", false},
	}
	for _, tt := range tests {
		got, err := bc.ResolveRoot(tt.arg)
		if tt.ok && (err != nil || got != tt.want) {
			t.Errorf("ResolveRoot(%q) = %q, %v; want %q", tt.arg, got, err, tt.want)
		}
		if !tt.ok && !errors.Is(err, source.ErrNotInStore) {
			t.Errorf("ResolveRoot(%q) = %q, %v; want ErrNotInStore", tt.arg, got, err)
		}
	}
}

// TestCheckNarURL: the URLs of narinfos nixoci follows stay inside the
// cache, for file:// and http(s) caches alike.
func TestCheckNarURL(t *testing.T) {
	for _, tt := range []struct {
		url string
		ok  bool
	}{
		{"nar/1prr0cy3xdcfc24i4wyzjgi9xrngc3ygil3zwrm2q1yk6pbbkgbn.nar.xz", true},
		{"nar/x.nar?hash=abc", true}, // harmonia's form
		{"sub/dir/x.nar.zst", true},
		{"nar/../nar/x.nar", true}, // still inside
		{"", false},
		{"../x.nar", false},
		{"nar/../../x.nar", false},
		{"/nar/x.nar", false},
		{"http://other.example/nar/x.nar", false},
		{"//other.example/nar/x.nar", false},
		{"file:///etc/passwd", false},
		{"nar\\..\\..\\x", false},
		{"nar/x\n.nar", false},
		{".", false},
	} {
		err := source.CheckNarURL(tt.url)
		if (err == nil) != tt.ok {
			t.Errorf("CheckNarURL(%q) = %v, want ok %v", tt.url, err, tt.ok)
		}
	}
}

// TestBinaryCacheHTTPRefusesOtherHosts: a narinfo of an http cache whose
// URL names another host is not followed (nothing is asked of it).
func TestBinaryCacheHTTPRefusesOtherHosts(t *testing.T) {
	c := closureCache(t)
	var asked sync.Mutex
	other := 0
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Lock()
		other++
		asked.Unlock()
		http.ServeFile(w, r, filepath.Join(c.Dir, c.Infos[storePath("app")].URL))
	}))
	defer elsewhere.Close()
	srv := httptest.NewServer(http.FileServer(http.Dir(c.Dir)))
	defer srv.Close()
	info := *c.Infos[storePath("app")]
	info.URL = elsewhere.URL + "/" + info.URL
	var out bytes.Buffer
	_, err := openCache(t, srv.URL, srv.Client()).WriteNAR(t.Context(), &info, &out)
	if err == nil || !strings.Contains(err.Error(), "leaves the cache directory") {
		t.Errorf("WriteNAR of a NAR on another host: %v", err)
	}
	if other != 0 {
		t.Errorf("%d requests to the other host", other)
	}
}

// TestBinaryCacheNarInfoOf: a narinfo by its hash part, checked to
// describe a path with it.
func TestBinaryCacheNarInfoOf(t *testing.T) {
	c := closureCache(t)
	bc := openCache(t, c.URL(), nil)
	info, err := bc.NarInfoOf(t.Context(), spec.PathTag(storePath("lib")))
	if err != nil || info.StorePath != storePath("lib") {
		t.Fatalf("NarInfoOf(lib) = %v, %v", info, err)
	}
	if _, err := bc.NarInfoOf(t.Context(), spec.PathTag(storePath("ghost"))); !errors.Is(err, source.ErrNotInCache) {
		t.Errorf("missing narinfo: %v, want ErrNotInCache", err)
	}
	// lib's narinfo under data's name.
	data, _ := os.ReadFile(filepath.Join(c.Dir, spec.PathTag(storePath("lib"))+".narinfo"))
	c.Write(spec.PathTag(storePath("data"))+".narinfo", data)
	if _, err := bc.NarInfoOf(t.Context(), spec.PathTag(storePath("data"))); err == nil || !strings.Contains(err.Error(), "describes") {
		t.Errorf("a narinfo describing another path: %v", err)
	}
	if err := bc.Ping(t.Context()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

// TestBinaryCacheWriteNARBounded: a file longer than its FileSize is
// read one byte past it, not to its end.
func TestBinaryCacheWriteNARBounded(t *testing.T) {
	c := closureCache(t)
	info := *c.Infos[storePath("data")] // uncompressed
	file, _ := os.ReadFile(filepath.Join(c.Dir, info.URL))
	long := append(bytes.Clone(file), make([]byte, 1<<20)...)
	c.Write(info.URL, long)
	var out bytes.Buffer
	_, err := openCache(t, c.URL(), nil).WriteNAR(t.Context(), &info, &out)
	if err == nil {
		t.Fatal("a file longer than its FileSize was accepted")
	}
	if out.Len() != len(file)+1 {
		t.Errorf("read %d bytes of a %d-byte FileSize, want FileSize+1", out.Len(), len(file))
	}
}

// TestBinaryCacheURL: the cache's URL as it is shown, without its
// credentials.
func TestBinaryCacheURL(t *testing.T) {
	bc := openCache(t, "https://user:s3cret@cache.example/sub/?x=1", nil)
	if got := bc.URL(); got != "https://cache.example/sub" {
		t.Errorf("URL() = %q", got)
	}
	if strings.Contains(bc.String(), "s3cret") {
		t.Errorf("String() = %q shows the password", bc.String())
	}
}
