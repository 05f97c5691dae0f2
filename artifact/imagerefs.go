package artifact

import (
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/spec"
)

// IsImage reports whether the image manifest m is an image made by nixoci
// image or nixoci serve --registry (SPEC.md section 8): its config is an
// image config and it is annotated with the closure it was made from.
func IsImage(m ocispec.Manifest) bool {
	return m.Config.MediaType == ocispec.MediaTypeImageConfig && m.Annotations[spec.AnnotationClosure] != ""
}

// ImageRefs is what an image's store-path layers name (SPEC.md sections
// 8.1 and 8.2): the path manifests they were made from, with their store
// paths, and the tags of their layer artifacts.
type ImageRefs struct {
	PathManifests []digest.Digest
	StorePaths    []string
	LayerTags     []string
}

// ReadImageRefs reads the annotations of an image's layers. Layers that
// name no path manifest (the root layer, nix-snapshotter's) are skipped.
func ReadImageRefs(m ocispec.Manifest) (ImageRefs, error) {
	var r ImageRefs
	comp := spec.LayerGzip
	for _, l := range m.Layers {
		if l.MediaType == spec.LayerZstd.MediaType() {
			comp = spec.LayerZstd
		}
	}
	for _, l := range m.Layers {
		manifests := strings.Fields(l.Annotations[spec.AnnotationPathManifest])
		paths := strings.Fields(l.Annotations[spec.AnnotationStorePath])
		if len(manifests) == 0 {
			continue
		}
		if len(manifests) != len(paths) {
			return r, fmt.Errorf("image layer %s names %d paths and %d path manifests: %w", l.Digest, len(paths), len(manifests), ErrNotArtifact)
		}
		hashes := make([]string, len(paths))
		for i, p := range paths {
			hashes[i] = spec.PathTag(p)
			d, err := digest.Parse(manifests[i])
			if err != nil {
				return r, fmt.Errorf("image layer %s: path manifest %q: %w", l.Digest, manifests[i], ErrNotArtifact)
			}
			r.PathManifests = append(r.PathManifests, d)
		}
		r.StorePaths = append(r.StorePaths, paths...)
		r.LayerTags = append(r.LayerTags, spec.LayerTag(hashes, comp))
	}
	return r, nil
}
