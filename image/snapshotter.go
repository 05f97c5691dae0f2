package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"strconv"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/spec"
	"github.com/nixoci/nixoci/target"
)

// storeSnapshotterLayer writes nix-snapshotter's layer: only empty
// mountpoints, a directory (0755) for each store path that is a directory
// and an empty file (0555) for each that is not, under nix/store/, with
// the annotations that make the snapshotter realise the paths with the
// node's Nix (which substitutes them, e.g. from nixoci serve). It is
// always gzip, as nix-snapshotter expects.
func storeSnapshotterLayer(ctx context.Context, dst target.Target, layers []Layer, paths []artifact.PathArtifact) (Layer, error) {
	rootType := map[string]RootType{}
	for _, l := range layers {
		for i, p := range l.Paths {
			rootType[p.Info.StorePath] = l.RootTypes[i]
		}
	}
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, p := range storeParents {
		h := header(p, tar.TypeDir, modeParent)
		h.ModTime = entryTimeZero
		if err := tw.WriteHeader(h); err != nil {
			return Layer{}, err
		}
	}
	annotations := map[string]string{spec.AnnotationNixLayer: "true"}
	for i, p := range paths {
		name := p.Info.StorePath[1:]
		h := header(name+"/", tar.TypeDir, 0o755)
		if rootType[p.Info.StorePath] != RootDirectory {
			h = header(name, tar.TypeReg, 0o555)
		}
		h.ModTime = entryTimeZero
		if err := tw.WriteHeader(h); err != nil {
			return Layer{}, err
		}
		annotations[spec.AnnotationNixStorePathPrefix+strconv.Itoa(i)] = p.Info.StorePath
	}
	if err := tw.Close(); err != nil {
		return Layer{}, err
	}
	var gz bytes.Buffer
	cw, err := layerCompressor(&gz, spec.LayerGzip)
	if err != nil {
		return Layer{}, err
	}
	cw.Write(raw.Bytes())
	if err := cw.Close(); err != nil {
		return Layer{}, err
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(gz.Bytes()), Size: int64(gz.Len())}
	if err := pushBytes(ctx, dst, desc, gz.Bytes()); err != nil {
		return Layer{}, fmt.Errorf("storing nix-snapshotter layer: %w", err)
	}
	desc.Annotations = annotations
	return Layer{Descriptor: desc, DiffID: digest.FromBytes(raw.Bytes())}, nil
}
