package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"strconv"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// storeSnapshotterLayer writes nix-snapshotter's layer: only empty
// mountpoints, a directory (0755) for each store path that is a directory
// and an empty file (0555) for each that is not, under nix/store/, with
// the annotations that make the snapshotter realise the paths with the
// node's Nix (which substitutes them, e.g. from nixoci serve). It is
// always gzip, as nix-snapshotter expects.
func storeSnapshotterLayer(ctx context.Context, dst backend.Target, layers []Layer, paths []artifact.PathArtifact) (Layer, error) {
	rootType := map[string]RootType{}
	for _, l := range layers {
		for i, p := range l.Paths {
			rootType[p.Info.StorePath] = l.RootTypes[i]
		}
	}
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	if err := writeParents(tw, entryTimeZero); err != nil {
		return Layer{}, err
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
	l, err := storeSmallLayer(ctx, dst, raw.Bytes(), spec.LayerGzip, annotations)
	if err != nil {
		return Layer{}, fmt.Errorf("storing nix-snapshotter layer: %w", err)
	}
	l.role = fmt.Sprintf("nix-snapshotter mountpoints of %d store paths", len(paths))
	return l, nil
}
