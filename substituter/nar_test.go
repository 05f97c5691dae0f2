package substituter_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
	"github.com/nixoci/nixoci/substituter"
)

// narExts are the NAR file extensions with each compression.
var narExts = map[spec.Compression]string{spec.CompressionZstd: ".nar.zst", spec.CompressionXz: ".nar.xz", spec.CompressionNone: ".nar"}

func TestNAR(t *testing.T) {
	for _, comp := range []spec.Compression{spec.CompressionZstd, spec.CompressionXz, spec.CompressionNone} {
		t.Run(string(comp), func(t *testing.T) {
			l := newLayout(t)
			p := newTestPath(t, "nar-"+string(comp), "nar "+string(comp), comp)
			p.store(t, l)
			s, logs := newServer(t, substituter.Options{Backends: backends(l)})
			srv := httptest.NewServer(s)
			defer srv.Close()
			if r := get(t, s, p.NarInfoPath()); r.Code != 200 || !strings.Contains(r.Body, "URL: "+p.NarURLPath()[1:]+"\n") {
				t.Fatalf("narinfo: %d\n%s", r.Code, r.Body)
			}
			if !strings.HasSuffix(p.NarURLPath(), narExts[comp]) {
				t.Fatalf("NAR URL %s", p.NarURLPath())
			}

			resp, body, err := rawRequest(t, srv, http.MethodGet, p.NarURLPath(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || string(body) != string(p.File) {
				t.Fatalf("GET NAR: %d, %d bytes, want 200 and the %d stored bytes", resp.StatusCode, len(body), len(p.File))
			}
			wantHeaders := map[string]string{
				"Content-Length": strconv.Itoa(len(p.File)),
				"Content-Type":   "application/x-nix-nar",
				"ETag":           `"` + p.FileDigest().String() + `"`,
				"Cache-Control":  "public, max-age=31536000, immutable",
			}
			for k, v := range wantHeaders {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}

			resp, body, err = rawRequest(t, srv, http.MethodHead, p.NarURLPath(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || len(body) != 0 {
				t.Errorf("HEAD NAR: %d with %d body bytes", resp.StatusCode, len(body))
			}
			for k, v := range wantHeaders {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("HEAD %s: %q, want %q", k, got, v)
				}
			}

			// A matching ETag: 304, nothing sent.
			resp, body, err = rawRequest(t, srv, http.MethodGet, p.NarURLPath(), nil, "If-None-Match", wantHeaders["ETag"])
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
				t.Errorf("If-None-Match: %d with %d bytes", resp.StatusCode, len(body))
			}

			// Any other extension is not this NAR.
			for c, ext := range narExts {
				if c == comp {
					continue
				}
				if r := get(t, s, "/nar/"+p.FileNix32()+ext); r.Code != 404 {
					t.Errorf("GET %s of a %s NAR = %d, want 404", ext, comp, r.Code)
				}
			}
			if logs.String() != "" {
				t.Errorf("unexpected logs:\n%s", logs)
			}
		})
	}
}

func TestNARRange(t *testing.T) {
	l := newLayout(t)
	p := newTestPath(t, "range-1", strings.Repeat("range ", 100), spec.CompressionNone)
	p.store(t, l)
	s, logs := newServer(t, substituter.Options{Backends: backends(l)})
	n := len(p.File)
	for _, tc := range []struct {
		rng        string
		from, to   int // slice [from, to)
		want       int
		wantHeader string
	}{
		{"bytes=0-99", 0, 100, 206, fmt.Sprintf("bytes 0-99/%d", n)},
		{"bytes=10-19", 10, 20, 206, fmt.Sprintf("bytes 10-19/%d", n)},
		{"bytes=100-", 100, n, 206, fmt.Sprintf("bytes 100-%d/%d", n-1, n)},
		{"bytes=-50", n - 50, n, 206, fmt.Sprintf("bytes %d-%d/%d", n-50, n-1, n)},
		{"bytes=0-", 0, n, 206, fmt.Sprintf("bytes 0-%d/%d", n-1, n)},
		{fmt.Sprintf("bytes=%d-", n+10), 0, 0, http.StatusRequestedRangeNotSatisfiable, fmt.Sprintf("bytes */%d", n)},
	} {
		r := get(t, s, p.NarURLPath(), "Range", tc.rng)
		if r.Code != tc.want {
			t.Errorf("Range %s: %d, want %d", tc.rng, r.Code, tc.want)
			continue
		}
		if got := r.Header.Get("Content-Range"); got != tc.wantHeader {
			t.Errorf("Range %s: Content-Range %q, want %q", tc.rng, got, tc.wantHeader)
		}
		if tc.want == 206 && r.Body != string(p.File[tc.from:tc.to]) {
			t.Errorf("Range %s: wrong %d bytes", tc.rng, len(r.Body))
		}
	}
	// Two ranges: a multipart answer holding both slices.
	r := get(t, s, p.NarURLPath(), "Range", "bytes=0-9,20-29")
	if r.Code != 206 || !strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/byteranges") ||
		!strings.Contains(r.Body, string(p.File[0:10])) || !strings.Contains(r.Body, string(p.File[20:30])) {
		t.Errorf("multi-range: %d %q", r.Code, r.Header.Get("Content-Type"))
	}
	// Partial reads of a healthy blob are not corruption.
	if v, _ := metricValue(t, s, "nixoci_corrupt_blobs_total"); v != 0 {
		t.Errorf("range requests counted as corrupt: %v\n%s", v, logs)
	}
}

func TestNARMalformed(t *testing.T) {
	l := newLayout(t)
	c := &counting{Target: l}
	s, _ := newServer(t, substituter.Options{Backends: backends(c)})
	good := nix32([]byte("x"))
	for _, name := range []string{
		"x.nar.zst",
		good[:51] + ".nar.zst",
		good + "0.nar.zst",
		"e" + good[1:] + ".nar.zst", // 'e' is not nix-base32
		"Z" + good[1:] + ".nar.zst",
		"z" + good[1:] + ".nar.zst", // non-zero padding bits: 260 bits for 256
		good + ".nar.gz",
		good + ".nar.bz2",
		good + ".nar.zstd",
		good + ".narinfo",
		good,
		good + ".nar.",
		good + ".NAR",
		strings.Repeat("0", 5000) + ".nar",
	} {
		if r := get(t, s, "/nar/"+name); r.Code != 400 {
			t.Errorf("GET /nar/%s = %d, want 400", name, r.Code)
		}
	}
	if n := c.total(); n != 0 {
		t.Errorf("malformed NAR names reached the backend:\n%s", c.String())
	}
	// Well formed but absent.
	if r := get(t, s, "/nar/"+good+".nar.zst"); r.Code != 404 {
		t.Errorf("absent NAR = %d, want 404", r.Code)
	}
	if r := do(t, s, http.MethodHead, "/nar/"+good+".nar.xz", nil); r.Code != 404 {
		t.Errorf("HEAD absent NAR = %d, want 404", r.Code)
	}
	// Deeper paths under nar/ are nothing.
	if r := get(t, s, "/nar/"+good+"/x.nar"); r.Code != 404 {
		t.Errorf("GET /nar/<hash>/x.nar = %d, want 404", r.Code)
	}
}

// TestNARBeforeNarInfo: after a restart Nix may ask for a NAR whose
// narinfo this server never served; the blob is found by digest.
func TestNARBeforeNarInfo(t *testing.T) {
	l := newLayout(t)
	p := newTestPath(t, "restart-1", "restart", spec.CompressionZstd)
	p.store(t, l)
	c := &counting{Target: l}
	s, _ := newServer(t, substituter.Options{Backends: backends(c)})
	r := get(t, s, p.NarURLPath())
	if r.Code != 200 || r.Body != string(p.File) {
		t.Fatalf("cold GET NAR: %d, %d bytes", r.Code, len(r.Body))
	}
	if got := c.resolveBlobs(); len(got) != 1 || got[0] != p.FileDigest() {
		t.Errorf("ResolveBlob calls %v, want one for %s", got, p.FileDigest())
	}
	if len(c.fetchReferences()) != 0 {
		t.Errorf("a NAR request read manifests: %v", c.fetchReferences())
	}
	// The location is remembered.
	if r := get(t, s, p.NarURLPath()); r.Code != 200 {
		t.Fatalf("second GET NAR: %d", r.Code)
	}
	if got := c.resolveBlobs(); len(got) != 1 {
		t.Errorf("second GET resolved the blob again: %v", got)
	}
	// A NAR that is gone from the backend is 404, and forgotten.
	os.Chmod(blobFile(l, p.FileDigest()), 0o644)
	if err := os.Remove(blobFile(l, p.FileDigest())); err != nil {
		t.Fatal(err)
	}
	if r := get(t, s, p.NarURLPath()); r.Code == 200 {
		t.Errorf("GET of a vanished NAR = %d", r.Code)
	}
	if r := get(t, s, p.NarURLPath()); r.Code != 404 {
		t.Errorf("GET of a vanished NAR, again = %d, want 404", r.Code)
	}
}

// TestNARWrongExtensionCold: the extension check must not depend on
// whether the narinfo was served first.
func TestNARWrongExtensionCold(t *testing.T) {
	l := newLayout(t)
	p := newTestPath(t, "coldext-1", "coldext", spec.CompressionZstd)
	p.store(t, l)
	s, _ := newServer(t, substituter.Options{Backends: backends(l)})
	for _, ext := range []string{".nar.xz", ".nar"} {
		if r := get(t, s, "/nar/"+p.FileNix32()+ext); r.Code != 404 {
			t.Errorf("cold GET %s of a zstd NAR = %d, want 404", ext, r.Code)
		}
	}
}

// corruptBlob flips one byte of a blob in a layout.
func corruptBlob(t *testing.T, file string, at int) {
	t.Helper()
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	data[at] ^= 0x55
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// getFull GETs url and reports whether a complete body (as long as
// Content-Length says) arrived.
func getFull(t *testing.T, client *http.Client, url string) (status int, complete bool, body []byte) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		return 0, false, nil
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	return resp.StatusCode, err == nil && resp.ContentLength >= 0 && int64(len(body)) == resp.ContentLength, body
}

func TestNARCorrupt(t *testing.T) {
	for _, tc := range []struct {
		name string
		warm bool // narinfo served first
		at   func(n int) int
	}{
		{"middle", true, func(n int) int { return n / 3 }},
		{"first byte", true, func(int) int { return 0 }},
		{"last byte", true, func(n int) int { return n - 1 }},
		{"cold", false, func(n int) int { return n / 2 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLayout(t)
			// Large enough to take several reads.
			p := newTestPath(t, "corrupt-1", strings.Repeat("corrupt data ", 10000), spec.CompressionNone)
			p.store(t, l)
			s, logs := newServer(t, substituter.Options{Backends: backends(l)})
			srv := httptest.NewServer(s)
			defer srv.Close()
			if tc.warm {
				if r := get(t, s, p.NarInfoPath()); r.Code != 200 {
					t.Fatal(r.Code)
				}
			}
			corruptBlob(t, blobFile(l, p.FileDigest()), tc.at(len(p.File)))

			status, complete, body := getFull(t, srv.Client(), srv.URL+p.NarURLPath())
			if complete && status < 300 {
				t.Fatalf("a corrupt NAR was delivered complete (status %d, %d bytes)", status, len(body))
			}
			if status == http.StatusNotFound {
				t.Fatalf("a corrupt NAR answered 404, which Nix would take as absence")
			}
			if status >= 200 && status < 300 && len(body) >= len(p.File) {
				t.Errorf("the whole corrupt body arrived: %d bytes", len(body))
			}
			eventually(t, "nixoci_corrupt_blobs_total 1", func() bool {
				v, _ := metricValue(t, s, "nixoci_corrupt_blobs_total")
				return v == 1
			})
			out := logs.String()
			if !strings.Contains(out, p.FileDigest().String()) || !strings.Contains(out, "corrupt") {
				t.Errorf("log does not name the corrupt blob %s:\n%s", p.FileDigest(), out)
			}
			if !strings.Contains(out, "level=ERROR") {
				t.Errorf("corruption not logged as an error:\n%s", out)
			}
			// Every later request fails the same way.
			if status, complete, _ := getFull(t, srv.Client(), srv.URL+p.NarURLPath()); complete && status < 300 || status == http.StatusNotFound {
				t.Errorf("second GET: status %d, complete %v", status, complete)
			}
		})
	}
}

// TestNARVerifiedFileServedDirectly: a layout blob hashed whole once is
// then served straight from its file, until the file changes.
func TestNARVerifiedFileServedDirectly(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("file identities are read on Linux only")
	}
	l := newLayout(t)
	p := newTestPath(t, "direct-1", strings.Repeat("direct data ", 10000), spec.CompressionNone)
	p.store(t, l)
	s, _ := newServer(t, substituter.Options{Backends: backends(l)})
	srv := httptest.NewServer(s)
	defer srv.Close()
	direct := func() float64 { v, _ := metricValue(t, s, "nixoci_blob_sendfile_total"); return v }
	for i, want := range []float64{0, 1, 2} {
		status, complete, body := getFull(t, srv.Client(), srv.URL+p.NarURLPath())
		if status != 200 || !complete || string(body) != string(p.File) {
			t.Fatalf("GET %d: status %d, complete %v, %d bytes", i, status, complete, len(body))
		}
		if got := direct(); got != want {
			t.Errorf("after GET %d: %v responses straight from the file, want %v", i, got, want)
		}
	}
	resp, body, err := rawRequest(t, srv, http.MethodGet, p.NarURLPath(), nil, "Range", "bytes=10-19")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusPartialContent || string(body) != string(p.File[10:20]) {
		t.Errorf("Range from the file: %d, %q", resp.StatusCode, body)
	}

	// Rewritten in place with the same size: hashed again, refused.
	corruptBlob(t, blobFile(l, p.FileDigest()), len(p.File)/2)
	if status, complete, _ := getFull(t, srv.Client(), srv.URL+p.NarURLPath()); complete && status < 300 {
		t.Fatalf("a NAR corrupted after it was verified was delivered complete")
	}
	eventually(t, "corruption counted", func() bool {
		v, _ := metricValue(t, s, "nixoci_corrupt_blobs_total")
		return v == 1
	})
	if got := direct(); got != 3 {
		t.Errorf("%v responses straight from the file after the rewrite, want 3 (the Range one)", got)
	}
}

// TestNARCorruptLength: a blob whose length changed is corrupt too.
func TestNARCorruptLength(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func([]byte) []byte
	}{
		{"truncated", func(b []byte) []byte { return b[:len(b)-100] }},
		{"extended", func(b []byte) []byte { return append(b, "trailing junk"...) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLayout(t)
			p := newTestPath(t, "length-1", strings.Repeat("length data ", 10000), spec.CompressionNone)
			p.store(t, l)
			s, _ := newServer(t, substituter.Options{Backends: backends(l)})
			srv := httptest.NewServer(s)
			defer srv.Close()
			get(t, s, p.NarInfoPath())
			file := blobFile(l, p.FileDigest())
			os.Chmod(file, 0o644)
			data, _ := os.ReadFile(file)
			if err := os.WriteFile(file, tc.edit(data), 0o644); err != nil {
				t.Fatal(err)
			}
			status, complete, body := getFull(t, srv.Client(), srv.URL+p.NarURLPath())
			if complete && status == 200 {
				t.Errorf("a %s NAR was delivered complete: %d bytes, FileSize %d", tc.name, len(body), len(p.File))
			}
			if v, _ := metricValue(t, s, "nixoci_corrupt_blobs_total"); v != 1 {
				t.Errorf("nixoci_corrupt_blobs_total %v, want 1", v)
			}
		})
	}
}

// streaming is a backend whose blobs cannot seek, as a registry's without
// range support.
type streaming struct {
	backend.Target
	read atomic.Int64 // blob bytes read
}

type countingReadCloser struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c countingReadCloser) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (s *streaming) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	rc, err := s.Target.Fetch(ctx, desc)
	if err != nil {
		return nil, err
	}
	return countingReadCloser{rc, &s.read}, nil
}

func TestNARStreamingBackend(t *testing.T) {
	l := newLayout(t)
	p := newTestPath(t, "stream-1", strings.Repeat("stream ", 5000), spec.CompressionZstd)
	q := newTestPath(t, "stream-2", strings.Repeat("broken ", 20000), spec.CompressionNone)
	p.store(t, l)
	q.store(t, l)
	st := &streaming{Target: l}
	s, logs := newServer(t, substituter.Options{Backends: backends(st)})
	srv := httptest.NewServer(s)
	defer srv.Close()
	get(t, s, p.NarInfoPath())
	resp, body, err := rawRequest(t, srv, http.MethodGet, p.NarURLPath(), nil)
	if err != nil || resp.StatusCode != 200 || string(body) != string(p.File) {
		t.Fatalf("GET NAR from a streaming backend: %v", err)
	}
	if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(p.File)) {
		t.Errorf("Content-Length %q", cl)
	}

	// Corruption is caught without seeking as well.
	get(t, s, q.NarInfoPath())
	corruptBlob(t, blobFile(l, q.FileDigest()), 1000)
	if _, complete, _ := getFull(t, srv.Client(), srv.URL+q.NarURLPath()); complete {
		t.Error("corrupt NAR from a streaming backend delivered complete")
	}
	eventually(t, "corruption counted", func() bool {
		v, _ := metricValue(t, s, "nixoci_corrupt_blobs_total")
		return v == 1
	})
	if !strings.Contains(logs.String(), q.FileDigest().String()) {
		t.Errorf("log does not name %s:\n%s", q.FileDigest(), logs)
	}
}

// TestNARHeadStreamingBackend: HEAD must not download the blob.
func TestNARHeadStreamingBackend(t *testing.T) {
	l := newLayout(t)
	p := newTestPath(t, "head-1", strings.Repeat("head ", 20000), spec.CompressionNone)
	p.store(t, l)
	st := &streaming{Target: l}
	s, _ := newServer(t, substituter.Options{Backends: backends(st)})
	get(t, s, p.NarInfoPath())
	r := do(t, s, http.MethodHead, p.NarURLPath(), nil)
	if r.Code != 200 || r.Header.Get("Content-Length") != strconv.Itoa(len(p.File)) {
		t.Errorf("HEAD: %d, Content-Length %q", r.Code, r.Header.Get("Content-Length"))
	}
	if n := st.read.Load(); n > 0 {
		t.Errorf("HEAD read %d blob bytes from the backend", n)
	}
}
