package artifact

import (
	"context"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// FetchPath reads the artifact of storePath from t, by its tag; a missing
// tag is an error wrapping errdef.ErrNotFound, a tag holding another path
// one wrapping ErrClaimMismatch.
func FetchPath(ctx context.Context, t backend.Target, storePath string) (PathArtifact, error) {
	return ResolvePath(ctx, t, PathClaim{Hash: spec.PathTag(storePath), StorePath: storePath})
}

// FetchPathByHash reads the artifact of the store path whose hash part is
// hash (its tag), with one round trip to a registry.
func FetchPathByHash(ctx context.Context, t backend.Target, hash string) (PathArtifact, error) {
	return ResolvePath(ctx, t, PathClaim{Hash: hash})
}

// FetchPathManifest reads the store-path artifact whose manifest desc
// names (by digest, as a version 2 closure lists it).
func FetchPathManifest(ctx context.Context, t backend.Target, desc ocispec.Descriptor) (PathArtifact, error) {
	return ResolvePath(ctx, t, PathClaim{Manifest: desc})
}
