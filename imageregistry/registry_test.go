package imageregistry_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/imageregistry"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/internal/serving"
	"github.com/nixoci/nixoci/spec"
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

// appLayout is a layout holding closures "app" (one path, x86_64-linux,
// with bin/run) and "shell", and a registry over it.
func appLayout(t *testing.T, opts imageregistry.Options) (*backend.Layout, *imageregistry.Registry) {
	l := fixture.Layout(t)
	fixture.SystemClosure(t, l, "app", fixture.SystemPath{Name: "app", System: "x86_64-linux"})
	fixture.SystemClosure(t, l, "shell", fixture.SystemPath{Name: "shell", System: "x86_64-linux"})
	b, err := serving.NewBackends([]serving.Backend{{Name: "backend0", Target: l}}, serving.BackendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	opts.Backends, opts.Logger = b, slog.New(slog.DiscardHandler)
	g, err := imageregistry.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return l, g
}

// composedImage fetches the image of name, failing the test unless it is
// a single image manifest.
func composedImage(t *testing.T, g http.Handler, name string) (ocispec.Descriptor, ocispec.Manifest) {
	t.Helper()
	rec := serve(t, g, "GET", "/v2/"+name+"/manifests/latest")
	var m ocispec.Manifest
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &m) != nil {
		t.Fatalf("%s: %d %s", name, rec.Code, rec.Body)
	}
	d := digest.Digest(rec.Header().Get("Docker-Content-Digest"))
	return ocispec.Descriptor{MediaType: rec.Header().Get("Content-Type"), Digest: d, Size: int64(rec.Body.Len())}, m
}

// TestRegistryAPI: the endpoints of the read-only API, and the errors of
// the distribution spec for what it does not have or refuses: a
// repository serves only what its image reaches, has the one tag latest,
// paginates its tag list and answers the referrers API.
func TestRegistryAPI(t *testing.T) {
	l, g := appLayout(t, imageregistry.Options{})
	ctx := t.Context()
	img, m := composedImage(t, g, "app")
	closure, err := l.Resolve(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	nar, err := l.Resolve(ctx, spec.PathTag(fixture.StorePath("app")))
	if err != nil {
		t.Fatal(err)
	}
	absent := digest.FromString("absent")
	emptyIndex := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`
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
		{"GET", "/v2/app%2fx/manifests/latest", 400, "NAME_INVALID", ""},
		{"GET", "/v2/app//manifests/latest", 400, "NAME_INVALID", ""},
		{"GET", "/v2/nope/manifests/latest", 404, "NAME_UNKNOWN", ""},
		{"GET", "/v2/app/manifests/latest", 200, "", ""},
		// Invalid or unknown references: 404 MANIFEST_UNKNOWN, as registries answer.
		{"GET", "/v2/app/manifests/bad!tag", 404, "MANIFEST_UNKNOWN", ""},
		{"GET", "/v2/app/manifests/.INVALID_MANIFEST_NAME", 404, "MANIFEST_UNKNOWN", ""},
		{"GET", "/v2/app/manifests/sha256:totallywrong", 404, "MANIFEST_UNKNOWN", ""},
		{"GET", "/v2/app/manifests/v1", 404, "MANIFEST_UNKNOWN", ""},
		{"GET", "/v2/app/manifests/" + absent.String(), 404, "MANIFEST_UNKNOWN", ""},
		{"GET", "/v2/app/manifests/" + img.Digest.String(), 200, "", ""},
		{"HEAD", "/v2/app/manifests/" + img.Digest.String(), 200, "", ""},
		// What the backend holds but the image does not reach.
		{"GET", "/v2/app/manifests/" + closure.Digest.String(), 404, "MANIFEST_UNKNOWN", ""},
		{"GET", "/v2/shell/manifests/" + img.Digest.String(), 404, "MANIFEST_UNKNOWN", ""},
		{"GET", "/v2/app/blobs/" + nar.Digest.String(), 404, "BLOB_UNKNOWN", ""},
		{"GET", "/v2/shell/blobs/" + m.Config.Digest.String(), 404, "BLOB_UNKNOWN", ""},
		{"GET", "/v2/app/blobs/" + m.Config.Digest.String(), 200, "", ""},
		{"GET", "/v2/app/blobs/" + m.Layers[0].Digest.String(), 200, "", ""},
		{"GET", "/v2/app/blobs/sha256:xyz", 400, "DIGEST_INVALID", ""},
		{"GET", "/v2/app/blobs/" + absent.String(), 404, "BLOB_UNKNOWN", ""},
		{"GET", "/v2/nope/blobs/" + m.Config.Digest.String(), 404, "NAME_UNKNOWN", ""},
		// One tag, paginated; query parameters may be percent-encoded.
		{"GET", "/v2/shell/app/tags/list", 200, "", `{"name":"shell/app","tags":["latest"]}` + "\n"},
		{"GET", "/v2/app/tags/list?n=1", 200, "", `{"name":"app","tags":["latest"]}` + "\n"},
		{"GET", "/v2/app/tags/list?n=0", 200, "", `{"name":"app","tags":[]}` + "\n"},
		{"GET", "/v2/app/tags/list?last=latest", 200, "", `{"name":"app","tags":[]}` + "\n"},
		{"GET", "/v2/app/tags/list?n=2&last=%6c%61", 200, "", `{"name":"app","tags":["latest"]}` + "\n"},
		{"GET", "/v2/app/tags/list?n=-1", 400, "UNSUPPORTED", ""},
		{"GET", "/v2/nope/tags/list", 404, "NAME_UNKNOWN", ""},
		// Referrers: an empty index where there are none.
		{"GET", "/v2/app/referrers/" + absent.String(), 200, "", emptyIndex},
		{"GET", "/v2/app/referrers/" + img.Digest.String() + "?artifactType=application%2Fx", 200, "", emptyIndex},
		{"GET", "/v2/app/referrers/sha256:xyz", 400, "DIGEST_INVALID", ""},
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
	rec := serve(t, g, "HEAD", "/v2/app/manifests/"+img.Digest.String())
	if rec.Header().Get("Docker-Content-Digest") != img.Digest.String() || rec.Header().Get("Content-Length") != strconv.Itoa(int(img.Size)) {
		t.Errorf("HEAD manifest: headers %v", rec.Header())
	}
	if ct := serve(t, g, "GET", "/v2/app/referrers/"+absent.String()).Header().Get("Content-Type"); ct != ocispec.MediaTypeImageIndex {
		t.Errorf("referrers Content-Type %q", ct)
	}
}

// TestRegistryReferrers: a manifest whose subject is a composed image
// (a signature pushed to the backend) is listed by the referrers API,
// and the artifactType filter applies.
func TestRegistryReferrers(t *testing.T) {
	l, g := appLayout(t, imageregistry.Options{})
	img, _ := composedImage(t, g, "app")
	sig, _ := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: "application/vnd.example.sig", Config: spec.EmptyConfig, Layers: []ocispec.Descriptor{spec.EmptyConfig},
		Subject: &img,
	})
	sigDesc := pushBlob(t, l, ocispec.MediaTypeImageManifest, sig)
	for _, tc := range []struct {
		query string
		want  []digest.Digest
	}{
		{"", []digest.Digest{sigDesc.Digest}},
		{"?artifactType=application%2Fvnd.example.sig", []digest.Digest{sigDesc.Digest}},
		{"?artifactType=application/other", nil},
	} {
		rec := serve(t, g, "GET", "/v2/app/referrers/"+img.Digest.String()+tc.query)
		var idx ocispec.Index
		if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &idx) != nil {
			t.Fatalf("referrers%s: %d %s", tc.query, rec.Code, rec.Body)
		}
		var got []digest.Digest
		for _, d := range idx.Manifests {
			got = append(got, d.Digest)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("referrers%s = %v, want %v", tc.query, got, tc.want)
		}
		if f := rec.Header().Get("OCI-Filters-Applied"); (f != "") != (tc.query != "") {
			t.Errorf("referrers%s: OCI-Filters-Applied %q", tc.query, f)
		}
	}
}

// composeTags lists the compose.* tags of a layout.
func composeTags(t *testing.T, l *backend.Layout) []string {
	t.Helper()
	var tags []string
	err := l.Tags(t.Context(), "", func(page []string) error {
		for _, tag := range page {
			if strings.HasPrefix(tag, "compose.") {
				tags = append(tags, tag)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tags
}

// TestRegistryCanonicalNames: names that list the same closures in
// another order or twice are one composition, stored under one tag;
// with Ephemeral, none is tagged.
func TestRegistryCanonicalNames(t *testing.T) {
	l, g := appLayout(t, imageregistry.Options{})
	var digests []digest.Digest
	for _, name := range []string{"app/shell", "shell/app", "app/shell/app", "shell/shell/app"} {
		d, _ := composedImage(t, g, name)
		digests = append(digests, d.Digest)
	}
	if len(slices.Compact(slices.Clone(digests))) != 1 {
		t.Errorf("one set of closures gave images %v", digests)
	}
	if tags := composeTags(t, l); len(tags) != 1 {
		t.Errorf("compose tags %v, want one", tags)
	}

	l, g = appLayout(t, imageregistry.Options{Ephemeral: true})
	d, m := composedImage(t, g, "app/shell")
	if tags := composeTags(t, l); len(tags) != 0 {
		t.Errorf("Ephemeral: compose tags %v written", tags)
	}
	if rec := serve(t, g, "GET", "/v2/shell/app/manifests/"+d.Digest.String()); rec.Code != 200 {
		t.Errorf("Ephemeral: manifest by digest %d", rec.Code)
	}
	if rec := serve(t, g, "GET", "/v2/app/shell/blobs/"+m.Layers[0].Digest.String()); rec.Code != 200 {
		t.Errorf("Ephemeral: layer %d", rec.Code)
	}
}

// blocking is a target whose blob fetches wait until release is closed,
// once hold is set: a composition converting a layer stops there.
type blocking struct {
	backend.Target
	hold    atomic.Bool
	started chan struct{}
	release chan struct{}
}

func (b *blocking) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if b.hold.Load() && desc.MediaType != ocispec.MediaTypeImageManifest && desc.MediaType != ocispec.MediaTypeImageIndex {
		select {
		case b.started <- struct{}{}:
		default:
		}
		<-b.release
	}
	return b.Target.Fetch(ctx, desc)
}

// TestRegistryCompositionsBounded: with MaxCompositions running, a name
// that needs another composition is answered 503 with Retry-After; a
// name composed before is still served.
func TestRegistryCompositionsBounded(t *testing.T) {
	l := fixture.Layout(t)
	fixture.SystemClosure(t, l, "app", fixture.SystemPath{Name: "app", System: "x86_64-linux"})
	fixture.SystemClosure(t, l, "shell", fixture.SystemPath{Name: "shell", System: "x86_64-linux"})
	fixture.SystemClosure(t, l, "tool", fixture.SystemPath{Name: "tool", System: "x86_64-linux"})
	bt := &blocking{Target: l, started: make(chan struct{}, 1), release: make(chan struct{})}
	b, err := serving.NewBackends([]serving.Backend{{Name: "backend0", Target: bt}}, serving.BackendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g, err := imageregistry.New(imageregistry.Options{Backends: b, Logger: slog.New(slog.DiscardHandler), MaxCompositions: 1})
	if err != nil {
		t.Fatal(err)
	}
	composedImage(t, g, "app")
	bt.hold.Store(true)
	done := make(chan int)
	go func() { done <- serve(t, g, "GET", "/v2/shell/manifests/latest").Code }()
	<-bt.started // the composition of shell holds the one slot
	rec := serve(t, g, "GET", "/v2/tool/manifests/latest")
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" || errorCode(rec.Body.Bytes()) != "TOOMANYREQUESTS" {
		t.Errorf("a second composition: %d Retry-After %q %s; want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	if rec := serve(t, g, "GET", "/v2/app/manifests/latest"); rec.Code != 200 {
		t.Errorf("an image composed before: %d while the slot is taken", rec.Code)
	}
	close(bt.release)
	if code := <-done; code != 200 {
		t.Errorf("the composition holding the slot ended %d", code)
	}
	if rec := serve(t, g, "GET", "/v2/tool/manifests/latest"); rec.Code != 200 {
		t.Errorf("after the slot was freed: %d", rec.Code)
	}
}

// TestRegistryBlob: a blob is served whole, by range and by HEAD, with
// its digest; a blob whose file was changed under its digest is cut
// short and logged, never served whole.
func TestRegistryBlob(t *testing.T) {
	l, g := appLayout(t, imageregistry.Options{})
	_, m := composedImage(t, g, "app")
	desc := m.Layers[0]
	data, err := content.FetchAll(t.Context(), l, desc)
	if err != nil {
		t.Fatal(err)
	}
	path := "/v2/app/blobs/" + desc.Digest.String()

	rec := serve(t, g, "GET", path)
	if rec.Code != 200 || !bytes.Equal(rec.Body.Bytes(), data) || rec.Header().Get("Docker-Content-Digest") != desc.Digest.String() {
		t.Fatalf("GET blob: %d, %d bytes, digest %q", rec.Code, rec.Body.Len(), rec.Header().Get("Docker-Content-Digest"))
	}
	rec = serve(t, g, "HEAD", path)
	if rec.Code != 200 || rec.Body.Len() != 0 || rec.Header().Get("Content-Length") != strconv.Itoa(len(data)) {
		t.Errorf("HEAD blob: %d, %d bytes, Content-Length %q", rec.Code, rec.Body.Len(), rec.Header().Get("Content-Length"))
	}
	rec = serve(t, g, "GET", path, "Range", "bytes=12-23")
	if rec.Code != 206 || rec.Body.String() != string(data[12:24]) {
		t.Errorf("GET blob range: %d %q", rec.Code, rec.Body)
	}

	file := filepath.Join(l.Dir(), "blobs", "sha256", desc.Digest.Encoded())
	bad := bytes.Clone(data)
	bad[len(bad)-1] ^= 1
	if err := os.WriteFile(file, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	g, logs := newRegistry(t, l) // a new server: nothing known as verified
	composedImage(t, g, "app")
	rec = serve(t, g, "GET", path)
	if rec.Body.Len() >= len(data) {
		t.Errorf("corrupt blob served whole (%d bytes)", rec.Body.Len())
	}
	if out := logs.String(); !strings.Contains(out, "corrupt blob") || !strings.Contains(out, desc.Digest.String()) {
		t.Errorf("corrupt blob not logged with its digest:\n%s", out)
	}
}
