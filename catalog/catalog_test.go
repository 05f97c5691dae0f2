package catalog_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"

	"github.com/nixoci/nixoci/catalog"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/spec"
)

// TestCatalogFindsCopiedPaths: a version 2 closure copied by its tag
// alone (as oras copy does) carries no path tags; the catalog finds its
// paths and its closure from the root. Version 1 closures give members
// without manifests; a plain image is not a closure.
func TestCatalogFindsCopiedPaths(t *testing.T) {
	ctx := t.Context()
	src := fixture.Layout(t)
	_, v2 := fixture.Synthetic(t, src, "app", spec.ClosureVersion, "1", "cat-app", "cat-lib", "cat-base")
	fixture.Synthetic(t, src, "old", spec.Version, "1", "cat-old", "cat-base")

	// A plain image next to them.
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	cfgDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	if err := src.Push(ctx, cfgDesc, bytes.NewReader(cfg)); err != nil {
		t.Fatal(err)
	}
	img, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfgDesc, Layers: []ocispec.Descriptor{}})
	imgDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(img), Size: int64(len(img))}
	if err := src.PushReference(ctx, imgDesc, bytes.NewReader(img), "plain"); err != nil {
		t.Fatal(err)
	}

	all := catalog.New(src, "src", catalog.Options{})
	if err := all.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if closures, paths := all.Stats(); closures != 2 || paths != 3 {
		t.Errorf("source: %d closures, %d path manifests; want 2 and 3 (the version 1 closure lists none)", closures, paths)
	}
	old, ok := all.ClosureOf(spec.PathTag(fixture.StorePath("cat-old")))
	if !ok || len(old.Members) != 2 || old.Members[0].Manifest.Digest != "" {
		t.Errorf("version 1 closure of cat-old: %+v, %v", old, ok)
	}

	dst := fixture.Layout(t)
	if _, err := oras.Copy(ctx, src, "app", dst, "app", oras.DefaultCopyOptions); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Resolve(ctx, spec.PathTag(v2[0].Info.StorePath)); err == nil {
		t.Fatal("the copy carried a path tag; this test needs one that does not")
	}
	c := catalog.New(dst, "dst", catalog.Options{})
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	for _, a := range v2 {
		ms, err := c.Lookup(spec.PathTag(a.Info.StorePath))
		if err != nil || len(ms) != 1 || ms[0].Manifest.Digest != a.Manifest.Digest || ms[0].StorePath != a.Info.StorePath || ms[0].Path != nil {
			t.Errorf("Lookup(%s) = %+v, %v; want manifest %s, no artifact", a.Info.StorePath, ms, err, a.Manifest.Digest)
		}
	}
	cl, ok := c.ClosureOf(spec.PathTag(v2[0].Info.StorePath))
	if !ok || len(cl.Members) != 3 {
		t.Fatalf("closure of the root: %+v, %v", cl, ok)
	}
	if _, ok := c.ClosureOf(spec.PathTag(v2[1].Info.StorePath)); ok {
		t.Error("a closure is listed as rooted at a path that is not its root")
	}
	if _, err := c.Lookup("00000000000000000000000000000000"); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("an unknown hash: %v, want ErrNotFound", err)
	}

	// A full catalog holds no closure rather than part of one, and says
	// it is incomplete: a path it lacks may be in the closure left out.
	small := catalog.New(dst, "dst", catalog.Options{MaxPaths: 2})
	if err := small.Refresh(ctx); err == nil || !strings.Contains(err.Error(), "app") {
		t.Errorf("refresh of a catalog too small: %v, want an error naming the closure", err)
	}
	if closures, paths := small.Stats(); closures != 0 || paths != 0 {
		t.Errorf("catalog of 2 paths holds %d closures, %d paths", closures, paths)
	}
	if _, err := small.Lookup(spec.PathTag(v2[0].Info.StorePath)); !errors.Is(err, catalog.ErrIncomplete) || errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("Lookup in a full catalog: %v, want ErrIncomplete", err)
	}
}
