package spec_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/image"
	"github.com/nixoci/nixoci/internal/fixture"
)

// TestImageExamples pins the image format (SPEC.md section 8, format
// version 5: a history entry per layer): the manifest and config of an
// image, and the config of a Buildpacks run image, of a fixed closure.
// examples/image-manifest-v4.json is what format versions 3 and 4 wrote
// for the same closure: readers still read it, and its store-path
// layers are the same blobs.
func TestImageExamples(t *testing.T) {
	ctx := t.Context()
	l := fixture.Layout(t)
	fixture.SystemClosure(t, l, "app", fixture.SystemPath{Name: "app", System: "x86_64-linux"}, fixture.SystemPath{Name: "lib"})
	opts := image.Options{LinkRoots: []string{fixture.StorePath("app")}, Entrypoint: []string{"/bin/run"}}
	res, err := image.Build(ctx, l, "app", l, "img", opts)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := content.FetchAll(ctx, l, res.Images[0].Config)
	if err != nil {
		t.Fatal(err)
	}
	checkExample(t, "image-manifest.json", res.ManifestData)
	checkExample(t, "image-config.json", cfg)

	opts.BuildpacksStack, opts.Created = "org.example.nix", time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	bp, err := image.Build(ctx, l, "app", l, "bp", opts)
	if err != nil {
		t.Fatal(err)
	}
	bpCfg, err := content.FetchAll(ctx, l, bp.Images[0].Config)
	if err != nil {
		t.Fatal(err)
	}
	checkExample(t, "image-buildpacks-config.json", bpCfg)

	var old4, v5 ocispec.Manifest
	old, err := os.ReadFile(filepath.Join("examples", "image-manifest-v4.json"))
	if err != nil {
		t.Fatal(err)
	}
	if json.Unmarshal(old, &old4) != nil || json.Unmarshal(res.ManifestData, &v5) != nil {
		t.Fatal("image manifests do not parse")
	}
	refs := make([]artifact.ImageRefs, 2)
	for i, m := range []ocispec.Manifest{old4, v5} {
		if !artifact.IsImage(m) {
			t.Errorf("format version %d image is not read as an image", 4+i)
		}
		if refs[i], err = artifact.ReadImageRefs(m); err != nil {
			t.Errorf("format version %d image: %v", 4+i, err)
		}
	}
	if !slices.Equal(refs[0].PathManifests, refs[1].PathManifests) || !slices.Equal(refs[0].LayerTags, refs[1].LayerTags) {
		t.Errorf("versions 4 and 5 name other path manifests or layers: %+v, %+v", refs[0], refs[1])
	}
	for i := range v5.Layers[:len(v5.Layers)-1] { // all but the root layer
		if old4.Layers[i].Digest != v5.Layers[i].Digest {
			t.Errorf("store-path layer %d changed between format versions 4 and 5", i)
		}
	}
	if bytes.Equal(old, res.ManifestData) {
		t.Error("format version 5 wrote what version 4 did")
	}
}
