package imageregistry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/internal/fixture"
)

var (
	// What a backend may be asked for: closure tags that are valid name
	// components, and well-formed digests.
	wellFormedTag    = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)
	wellFormedDigest = regexp.MustCompile(`^sha(256:[0-9a-f]{64}|384:[0-9a-f]{96}|512:[0-9a-f]{128})$`)
)

// asked records the references a backend was asked to resolve.
type asked struct {
	backend.Target
	mu   sync.Mutex
	refs []string
}

func (a *asked) add(ref string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.refs = append(a.refs, ref)
}

func (a *asked) Resolve(ctx context.Context, ref string) (ocispec.Descriptor, error) {
	a.add(ref)
	return a.Target.Resolve(ctx, ref)
}

func (a *asked) FetchReference(ctx context.Context, ref string) (ocispec.Descriptor, io.ReadCloser, error) {
	a.add(ref)
	return a.Target.FetchReference(ctx, ref)
}

func (a *asked) ResolveBlob(ctx context.Context, d digest.Digest) (ocispec.Descriptor, error) {
	a.add(d.String())
	return a.Target.ResolveBlob(ctx, d)
}

func (a *asked) take() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	refs := a.refs
	a.refs = nil
	return refs
}

// FuzzServeHTTP sends arbitrary request targets under /v2/ to a registry
// over a healthy layout holding one blob: it must never panic or answer
// 5xx, and may ask the backend only for valid closure tags and digests.
func FuzzServeHTTP(f *testing.F) {
	l := fixture.Layout(f)
	desc := pushBlob(f, l, "application/octet-stream", []byte("fuzz blob"))
	a := &asked{Target: l}
	g, _ := newRegistry(f, a)
	for _, seed := range []string{
		"/v2/", "/v2", "/v2/app/manifests/latest", "/v2/shell/app/manifests/latest",
		"/v2/app/blobs/" + desc.Digest.String(), "/v2/app/blobs/sha256:00", "/v2/app/tags/list",
		"/v2/app/manifests/" + desc.Digest.String(), "/v2/../etc/passwd", "/v2/%2e%2e/x",
		"/v2/a//b/manifests/x", "/v2/UP/manifests/latest", "/v2/app/manifests/sha512:" + strings.Repeat("0", 128),
	} {
		f.Add(uint8(0), seed)
	}
	methods := []string{http.MethodGet, http.MethodHead, http.MethodPut}
	f.Fuzz(func(t *testing.T, method uint8, target string) {
		if strings.ContainsAny(target, " \r\n") || !strings.HasPrefix(target, "/v2") {
			return // not one request line, or not routed here
		}
		m := methods[int(method)%len(methods)]
		req, err := parseRequest(m, target)
		if err != nil {
			return // net/http refuses it before any handler
		}
		a.take()
		rec := httptest.NewRecorder()
		g.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %q = %d on a healthy layout: %s", m, target, rec.Code, rec.Body)
		}
		for _, ref := range a.take() {
			if !wellFormedTag.MatchString(ref) && !wellFormedDigest.MatchString(ref) {
				t.Fatalf("%s %q asked the backend for %q", m, target, ref)
			}
		}
	})
}
