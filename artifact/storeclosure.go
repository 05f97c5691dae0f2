package artifact

import (
	"context"
	"path"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// StoreClosure stores the closure of roots made of paths, whose artifacts
// dst holds already, in the format version given ("" for the current),
// tagged tag last. It returns what the tag names and the number of parts.
func StoreClosure(ctx context.Context, dst backend.Target, roots []string, paths []PathArtifact, tag, version string) (ocispec.Descriptor, int, error) {
	p := &pusher{dst: dst}
	storeDir := path.Dir(roots[0])
	if version == spec.Version {
		cm, err := NewClosureManifests(roots, paths, storeDir, 0)
		if err != nil {
			return ocispec.Descriptor{}, 0, err
		}
		return cm.Top.Descriptor, len(cm.Parts), p.storeClosure(ctx, cm, tag)
	}
	ci, err := NewClosureIndex(roots, paths, storeDir, 0)
	if err != nil {
		return ocispec.Descriptor{}, 0, err
	}
	return ci.Top.Descriptor, len(ci.Parts), p.storeClosureIndex(ctx, ci, tag)
}
