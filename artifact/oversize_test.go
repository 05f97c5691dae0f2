package artifact_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// TestOversizedManifests: a manifest too large to read, or a path
// manifest whose annotations exceed what a narinfo may hold, is a clear
// error, and reading it allocates nothing of that size.
func TestOversizedManifests(t *testing.T) {
	ctx := t.Context()
	l := openLayout(t)
	p := fakePath(t, "big-annotations", "seed")

	// A tag whose manifest is over the 8 MiB read limit.
	huge := []byte(`{"mediaType":"` + ocispec.MediaTypeImageManifest + `","pad":"` + strings.Repeat("x", backend.MaxManifestRead) + `"}`)
	hugeDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(huge), Size: int64(len(huge))}
	if err := l.PushReference(ctx, hugeDesc, bytes.NewReader(huge), spec.PathTag(p.Info.StorePath)); err != nil {
		t.Fatal(err)
	}
	_, err := artifact.FetchPath(ctx, l, p.Info.StorePath)
	if err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("FetchPath of a %d-byte manifest: %v, want an error about the limit", len(huge), err)
	}
	if _, err := artifact.ReadClosure(ctx, l, spec.PathTag(p.Info.StorePath)); err == nil {
		t.Error("ReadClosure read a manifest over the limit")
	}

	// A path manifest under the limit whose annotations are over 1 MiB.
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest, ArtifactType: spec.ArtifactTypePath,
		Layers: []ocispec.Descriptor{p.NAR, p.NarInfo},
		Annotations: map[string]string{
			spec.AnnotationVersion: spec.Version, spec.AnnotationStorePath: p.Info.StorePath,
			spec.AnnotationNarHash: p.Info.NarHash, spec.AnnotationNarSize: "1",
			spec.AnnotationSigs: "k:" + strings.Repeat("A", 2<<20),
		},
	}
	m.SchemaVersion = 2
	data, _ := json.Marshal(m)
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(data), Size: int64(len(data))}
	_, err = artifact.ParsePathManifest(desc, data)
	if !errors.Is(err, artifact.ErrNotArtifact) || !strings.Contains(err.Error(), "annotations") {
		t.Errorf("ParsePathManifest with 2 MiB of annotations: %v", err)
	}
}
