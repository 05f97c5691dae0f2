package catalog_test

import (
	"bytes"
	"errors"
	"testing"

	"oras.land/oras-go/v2"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/catalog"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/spec"
)

// TestCatalogFindsCopiedFiles: a closure listing a build log, copied by
// its tag alone (no file tags at the destination), gives the log's tag
// its manifest; a tag no closure lists is not found once every closure
// was read.
func TestCatalogFindsCopiedFiles(t *testing.T) {
	ctx := t.Context()
	src := fixture.Layout(t)
	_, paths := fixture.Synthetic(t, src, "plain", spec.ClosureVersion, "f", "catf-app")
	drv := fixture.StorePath("catf-app.drv")
	log := artifact.NewLogArtifact(drv, artifact.BytesFile("log/"+fixture.BaseName("catf-app.drv"), spec.MediaTypeLog, []byte("built\n")))
	if err := artifact.StoreFileArtifact(ctx, src, log, spec.LogTag(drv)); err != nil {
		t.Fatal(err)
	}
	ci, err := artifact.NewClosureIndexWithFiles([]string{paths[0].Info.StorePath}, paths,
		[]artifact.ClosureFile{{StorePath: paths[0].Info.StorePath, Artifact: log}}, "/nix/store", 0)
	if err != nil {
		t.Fatal(err)
	}
	blobs := ci.Blobs()
	for _, b := range blobs[:len(blobs)-1] {
		if err := backend.PushBytes(ctx, src, b.Descriptor, b.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.PushReference(ctx, ci.Top.Descriptor, bytes.NewReader(ci.Top.Data), "app"); err != nil {
		t.Fatal(err)
	}
	dst := fixture.Layout(t)
	if _, err := oras.Copy(ctx, src, "app", dst, "app", oras.DefaultCopyOptions); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Resolve(ctx, spec.LogTag(drv)); err == nil {
		t.Fatal("the copy carried the log's tag; the test needs a copy without it")
	}
	c := catalog.New(dst, "dst", catalog.Options{})
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := c.File(spec.LogTag(drv))
	if err != nil || d.Digest != log.Manifest.Digest {
		t.Errorf("File(%s) = %s, %v; want the log's manifest %s", spec.LogTag(drv), d.Digest, err, log.Manifest.Digest)
	}
	if _, err := c.File(spec.LogTag(fixture.StorePath("other.drv"))); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("a log no closure lists: %v, want ErrNotFound", err)
	}
}
