package imageregistry_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/imageregistry"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/internal/serving"
)

// syncBuffer is a goroutine-safe buffer for logs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newRegistry makes a Registry over t, logging to the returned buffer.
func newRegistry(tb testing.TB, t backend.Target) (*imageregistry.Registry, *syncBuffer) {
	tb.Helper()
	b, err := serving.NewBackends([]serving.Backend{{Name: "backend0", Target: t}}, serving.BackendOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	logs := &syncBuffer{}
	g, err := imageregistry.New(imageregistry.Options{Backends: b, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		tb.Fatal(err)
	}
	return g, logs
}

// pushBlob stores data in l as a plain blob.
func pushBlob(t testing.TB, l *backend.Layout, mediaType string, data []byte) ocispec.Descriptor {
	t.Helper()
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := l.Push(context.Background(), desc, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	return desc
}

// parseRequest parses "method target" as a server reads a request line:
// target is not cleaned, resolved or escaped.
func parseRequest(method, target string, header ...string) (*http.Request, error) {
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\nHost: registry.test\r\n")
	for i := 0; i+1 < len(header); i += 2 {
		b.WriteString(header[i] + ": " + header[i+1] + "\r\n")
	}
	b.WriteString("\r\n")
	return http.ReadRequest(bufio.NewReader(strings.NewReader(b.String())))
}

// serve sends a request with target as written to h.
func serve(t testing.TB, h http.Handler, method, target string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	req, err := parseRequest(method, target, header...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// errorCode is the first distribution error code of a response body.
func errorCode(body []byte) string {
	var e struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	if json.Unmarshal(body, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

// TestRegistryAPI: the endpoints of the read-only API, and the errors of
// the distribution spec for what it does not have or refuses.
func TestRegistryAPI(t *testing.T) {
	l := fixture.Layout(t)
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)
	m := pushBlob(t, l, ocispec.MediaTypeImageManifest, manifest)
	g, _ := newRegistry(t, l)
	absent := digest.FromString("absent")
	for _, tc := range []struct {
		method, target string
		status         int
		code, body     string
	}{
		{"GET", "/v2/", 200, "", "{}"},
		{"GET", "/v2", 200, "", "{}"},
		{"HEAD", "/v2/", 200, "", ""},
		{"PUT", "/v2/app/manifests/latest", 405, "UNSUPPORTED", ""},
		{"DELETE", "/v2/app/blobs/" + absent.String(), 405, "UNSUPPORTED", ""},
		{"GET", "/v2/App/manifests/latest", 400, "NAME_INVALID", ""},
		{"GET", "/v2/" + strings.Repeat("a/", 16) + "a/manifests/latest", 400, "NAME_INVALID", ""},
		{"GET", "/v2/" + strings.Repeat("a", 256) + "/manifests/latest", 400, "NAME_INVALID", ""},
		{"GET", "/v2/%2e%2e/manifests/latest", 400, "NAME_INVALID", ""},
		{"GET", "/v2/app//manifests/latest", 400, "NAME_INVALID", ""},
		{"GET", "/v2/app/manifests/latest", 404, "NAME_UNKNOWN", ""},
		{"GET", "/v2/app/manifests/bad!tag", 400, "MANIFEST_UNKNOWN", ""},
		{"GET", "/v2/app/manifests/" + absent.String(), 404, "MANIFEST_UNKNOWN", ""},
		{"GET", "/v2/app/manifests/" + m.Digest.String(), 200, "", string(manifest)},
		{"HEAD", "/v2/app/manifests/" + m.Digest.String(), 200, "", ""},
		{"GET", "/v2/app/blobs/sha256:xyz", 400, "DIGEST_INVALID", ""},
		{"GET", "/v2/app/blobs/" + absent.String(), 404, "BLOB_UNKNOWN", ""},
		{"GET", "/v2/shell/app/tags/list", 200, "", `{"name":"shell/app","tags":["latest"]}` + "\n"},
		{"GET", "/v2/app/referrers/" + absent.String(), 404, "UNSUPPORTED", ""},
		{"GET", "/v2/app", 404, "UNSUPPORTED", ""},
	} {
		rec := serve(t, g, tc.method, tc.target)
		if rec.Code != tc.status || errorCode(rec.Body.Bytes()) != tc.code {
			t.Errorf("%s %.60s = %d %q, want %d %q\n%s", tc.method, tc.target, rec.Code, errorCode(rec.Body.Bytes()), tc.status, tc.code, rec.Body)
		}
		if tc.body != "" && rec.Body.String() != tc.body {
			t.Errorf("%s %.60s: body %q, want %q", tc.method, tc.target, rec.Body, tc.body)
		}
		if v := rec.Header().Get("Docker-Distribution-API-Version"); v != "registry/2.0" {
			t.Errorf("%s %.60s: Docker-Distribution-API-Version %q", tc.method, tc.target, v)
		}
	}
	rec := serve(t, g, "HEAD", "/v2/app/manifests/"+m.Digest.String())
	if rec.Header().Get("Docker-Content-Digest") != m.Digest.String() || rec.Header().Get("Content-Length") != strconv.Itoa(len(manifest)) {
		t.Errorf("HEAD manifest: headers %v", rec.Header())
	}
}

// TestRegistryBlob: a blob is served whole, by range and by HEAD, with
// its digest; a blob whose file was changed under its digest is cut
// short and logged, never served whole.
func TestRegistryBlob(t *testing.T) {
	l := fixture.Layout(t)
	data := bytes.Repeat([]byte("layer bytes "), 1000)
	desc := pushBlob(t, l, "application/octet-stream", data)
	g, _ := newRegistry(t, l)
	path := "/v2/app/blobs/" + desc.Digest.String()

	rec := serve(t, g, "GET", path)
	if rec.Code != 200 || !bytes.Equal(rec.Body.Bytes(), data) || rec.Header().Get("Docker-Content-Digest") != desc.Digest.String() {
		t.Fatalf("GET blob: %d, %d bytes, digest %q", rec.Code, rec.Body.Len(), rec.Header().Get("Docker-Content-Digest"))
	}
	rec = serve(t, g, "HEAD", path)
	if rec.Code != 200 || rec.Body.Len() != 0 || rec.Header().Get("Content-Length") != "12000" {
		t.Errorf("HEAD blob: %d, %d bytes, Content-Length %q", rec.Code, rec.Body.Len(), rec.Header().Get("Content-Length"))
	}
	rec = serve(t, g, "GET", path, "Range", "bytes=12-23")
	if rec.Code != 206 || rec.Body.String() != "layer bytes " {
		t.Errorf("GET blob range: %d %q", rec.Code, rec.Body)
	}

	file := filepath.Join(l.Dir(), "blobs", "sha256", desc.Digest.Encoded())
	bad := bytes.Clone(data)
	bad[len(bad)-1] ^= 1
	if err := os.WriteFile(file, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	g, logs := newRegistry(t, l) // a new server: nothing known as verified
	rec = serve(t, g, "GET", path)
	if rec.Body.Len() >= len(data) {
		t.Errorf("corrupt blob served whole (%d bytes)", rec.Body.Len())
	}
	if out := logs.String(); !strings.Contains(out, "corrupt blob") || !strings.Contains(out, desc.Digest.String()) {
		t.Errorf("corrupt blob not logged with its digest:\n%s", out)
	}
}
