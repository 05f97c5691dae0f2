package artifact

import (
	"context"
	"fmt"
	"io"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// FetchPath reads the artifact of storePath from t, by its tag; a missing
// tag is an error wrapping errdef.ErrNotFound.
func FetchPath(ctx context.Context, t backend.Target, storePath string) (PathArtifact, error) {
	art, err := FetchPathByHash(ctx, t, spec.PathTag(storePath))
	if err != nil {
		return PathArtifact{}, err
	}
	if art.Info.StorePath != storePath {
		return PathArtifact{}, fmt.Errorf("tag %s holds %s, not %s: %w", spec.PathTag(storePath), art.Info.StorePath, storePath, ErrNotArtifact)
	}
	return art, nil
}

// readManifest reads a manifest whole, bounded and checked against desc.
func readManifest(rc io.ReadCloser, desc ocispec.Descriptor) ([]byte, error) {
	data, err := backend.ReadAll(rc, desc, backend.MaxManifestRead)
	if err != nil {
		return nil, fmt.Errorf("manifest %w", err)
	}
	return data, nil
}

// FetchPathByHash reads the artifact of the store path whose hash part is
// hash (its tag), with one round trip to a registry.
func FetchPathByHash(ctx context.Context, t backend.Target, hash string) (PathArtifact, error) {
	desc, rc, err := t.FetchReference(ctx, hash)
	if err != nil {
		return PathArtifact{}, err
	}
	data, err := readManifest(rc, desc)
	if err != nil {
		return PathArtifact{}, err
	}
	art, err := ParsePathManifest(desc, data)
	if err != nil {
		return PathArtifact{}, fmt.Errorf("tag %s: %w", hash, err)
	}
	if spec.PathTag(art.Info.StorePath) != hash {
		return PathArtifact{}, fmt.Errorf("tag %s holds %s: %w", hash, art.Info.StorePath, ErrNotArtifact)
	}
	return art, nil
}

// FetchPathManifest reads the store-path artifact whose manifest desc
// names (by digest, as a version 2 closure lists it).
func FetchPathManifest(ctx context.Context, t backend.Target, desc ocispec.Descriptor) (PathArtifact, error) {
	data, err := backend.FetchAll(ctx, t, desc, backend.MaxManifestRead)
	if err != nil {
		return PathArtifact{}, fmt.Errorf("path manifest %w", err)
	}
	return ParsePathManifest(desc, data)
}
