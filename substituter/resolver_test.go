package substituter_test

import (
	"bytes"
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/spec"
	"github.com/nixoci/nixoci/substituter"
)

// copiedClosure stores a version 2 closure of names tagged tag in a new
// layout, then copies it by its tag alone (as oras copy does: no path
// tags) into dst. It returns the paths' artifacts in name order.
func copiedClosure(t *testing.T, dst backend.Target, tag, seed string, names ...string) (ocispec.Descriptor, []artifact.PathArtifact) {
	t.Helper()
	src := fixture.Layout(t)
	desc, arts := fixture.Synthetic(t, src, tag, spec.ClosureVersion, seed, names...)
	if _, err := oras.Copy(t.Context(), src, tag, dst, tag, oras.DefaultCopyOptions); err != nil {
		t.Fatal(err)
	}
	return desc, arts
}

// TestHostileClosureEntry: a closure copied without path tags whose entry
// for one path names another path's manifest: the narinfo asked for is
// never answered with the other path (200), nor as absent (404), but 502,
// logged naming the manifest and counted.
func TestHostileClosureEntry(t *testing.T) {
	src := fixture.Layout(t)
	_, arts := fixture.Synthetic(t, src, "chain", spec.ClosureVersion, "1", "hostile-a", "hostile-b")
	_, data, err := backend.FetchManifest(t.Context(), src, "chain")
	if err != nil {
		t.Fatal(err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		t.Fatal(err)
	}
	// The entry of one path names the other's manifest.
	victim := 0
	if idx.Manifests[0].Digest != arts[0].Manifest.Digest {
		victim = 1
	}
	e := &idx.Manifests[victim]
	e.Digest, e.Size = arts[1].Manifest.Digest, arts[1].Manifest.Size
	delete(e.Annotations, spec.AnnotationNarInfo)
	evil, _ := json.Marshal(idx)
	l := fixture.Layout(t)
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(evil), Size: int64(len(evil))}
	if err := src.PushReference(t.Context(), d, bytes.NewReader(evil), "evil"); err != nil {
		t.Fatal(err)
	}
	if _, err := oras.Copy(t.Context(), src, "evil", l, "evil", oras.DefaultCopyOptions); err != nil {
		t.Fatal(err)
	}

	s, logs := newServer(t, substituter.Options{Backends: backends(l)})
	defer s.Close()
	hash := spec.PathTag(arts[0].Info.StorePath)
	for range 2 { // and not cached
		r := get(t, s, "/"+hash+".narinfo")
		if r.Code != 502 {
			t.Errorf("narinfo of the path whose entry lies: %d, want 502\n%s", r.Code, r.Body)
		}
	}
	if r := get(t, s, "/"+spec.PathTag(arts[1].Info.StorePath)+".narinfo"); r.Code != 200 || !strings.Contains(r.Body, "StorePath: "+arts[1].Info.StorePath+"\n") {
		t.Errorf("the other path: %d\n%s", r.Code, r.Body)
	}
	if v, _ := metricValue(t, s, `nixoci_refused_artifacts_total{reason="claim"}`); v != 2 {
		t.Errorf("refused artifacts counted: %v, want 2", v)
	}
	out := logs.String()
	if !strings.Contains(out, "artifact refused") || !strings.Contains(out, arts[1].Manifest.Digest.String()) || !strings.Contains(out, "backend0") {
		t.Errorf("the refusal is not logged naming the manifest and the backend:\n%s", out)
	}
	// Beside the good closure, the hostile one hides nothing: the entry
	// that checks out answers.
	if _, err := oras.Copy(t.Context(), src, "chain", l, "chain", oras.DefaultCopyOptions); err != nil {
		t.Fatal(err)
	}
	s2, _ := newServer(t, substituter.Options{Backends: backends(l)})
	defer s2.Close()
	if r := get(t, s2, "/"+hash+".narinfo"); r.Code != 200 || !strings.Contains(r.Body, "StorePath: "+arts[0].Info.StorePath+"\n") {
		t.Errorf("with the good closure beside the hostile one: %d\n%s", r.Code, r.Body)
	}
}

// TestCatalogPastAFailingBackend: a failing backend's tag lookup does not
// hide a path a later backend holds in a copied closure.
func TestCatalogPastAFailingBackend(t *testing.T) {
	l := fixture.Layout(t)
	_, arts := copiedClosure(t, l, "chain", "1", "past-a", "past-b")
	s, _ := newServer(t, substituter.Options{Backends: backends(&failing{}, l)})
	defer s.Close()
	if r := get(t, s, "/"+spec.PathTag(arts[1].Info.StorePath)+".narinfo"); r.Code != 200 {
		t.Errorf("path of a closure copied into the second backend: %d, want 200\n%s", r.Code, r.Body)
	}
}

// TestIncompleteCatalog: while one closure cannot be read, the paths of
// the others are served, and a path no closure read lists is a 5xx (the
// unread closure may hold it), never a 404; once it reads, it is 404.
func TestIncompleteCatalog(t *testing.T) {
	l := fixture.Layout(t)
	_, good := copiedClosure(t, l, "good", "1", "inc-a", "inc-b")
	bad, unread := copiedClosure(t, l, "bad", "1", "inc-c", "inc-d")
	f := &flaky{Target: l, digests: map[string]bool{bad.Digest.String(): true}}
	f.fail.Store(true)
	s, logs := newServer(t, substituter.Options{Backends: backends(f), CatalogInterval: 20 * time.Millisecond})
	defer s.Close()
	if r := get(t, s, "/"+spec.PathTag(good[1].Info.StorePath)+".narinfo"); r.Code != 200 {
		t.Errorf("path of the readable closure: %d, want 200\n%s", r.Code, r.Body)
	}
	for _, hash := range []string{spec.PathTag(unread[1].Info.StorePath), "00000000000000000000000000000000"} {
		if r := get(t, s, "/"+hash+".narinfo"); r.Code < 500 {
			t.Errorf("%s while a closure is unreadable: %d, want 5xx\n%s", hash, r.Code, r.Body)
		}
	}
	if out := logs.String(); !strings.Contains(out, "closure bad") {
		t.Errorf("the unreadable closure is not named in the log:\n%s", out)
	}
	f.fail.Store(false)
	eventually(t, "the closure read", func() bool {
		return get(t, s, "/"+spec.PathTag(unread[1].Info.StorePath)+".narinfo").Code == 200
	})
	if r := get(t, s, "/00000000000000000000000000000000.narinfo"); r.Code != 404 {
		t.Errorf("absent path once every closure was read: %d, want 404", r.Code)
	}
}

// TestNewFailureStartsNothing: a Server that cannot be made (uploads
// without credentials) leaves no catalog refresh running.
func TestNewFailureStartsNothing(t *testing.T) {
	l := fixture.Layout(t)
	before := runtime.NumGoroutine()
	_, err := substituter.New(substituter.Options{Backends: backends(&blockingTags{l, make(chan struct{})}),
		Upload: &substituter.UploadOptions{}})
	if err == nil {
		t.Fatal("New without credentials succeeded")
	}
	if after := runtime.NumGoroutine(); after != before {
		t.Errorf("%d goroutines before New, %d after it failed", before, after)
	}
}

// blockingTags lists tags only once release is closed.
type blockingTags struct {
	backend.Target
	release chan struct{}
}

func (b *blockingTags) Tags(ctx context.Context, last string, fn func([]string) error) error {
	select {
	case <-b.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.Target.Tags(ctx, last, fn)
}
