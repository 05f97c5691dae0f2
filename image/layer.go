package image

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/codec"
	"github.com/nixoci/nixoci/internal/countio"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// Layer is one layer of an image: its blob descriptor (with annotations),
// the digest of its uncompressed tar, and the store paths it holds.
type Layer struct {
	Descriptor ocispec.Descriptor
	DiffID     digest.Digest
	Paths      []artifact.PathArtifact
	RootTypes  []RootType // per path: what the top-level node is
	Reused     bool       // found stored, not converted now
	role       string     // what a layer holding no store path is, for its history entry
}

// layerCompressor wraps w in the layer compression.
func layerCompressor(w io.Writer, c spec.LayerCompression) (io.WriteCloser, error) {
	switch c {
	case spec.LayerGzip:
		// No name, no time, fixed level: the header depends on nothing.
		return gzip.NewWriterLevel(w, gzip.DefaultCompression)
	case spec.LayerZstd:
		return codec.NewWriter(w, spec.CompressionZstd)
	}
	return nil, fmt.Errorf("unknown layer compression %q", c)
}

// convertLayer streams the NARs of paths, each from its source, into one
// compressed tar in a temporary file, which the caller removes.
func convertLayer(ctx context.Context, srcs narSources, paths []artifact.PathArtifact, c spec.LayerCompression, tmpDir string) (Layer, string, error) {
	f, err := os.CreateTemp(tmpDir, "nixoci-layer-*")
	if err != nil {
		return Layer{}, "", err
	}
	keep := false
	defer func() {
		f.Close()
		if !keep {
			os.Remove(f.Name())
		}
	}()
	blobHash := sha256.New()
	var size atomic.Int64
	cw, err := layerCompressor(countio.Writer{W: io.MultiWriter(f, blobHash), N: &size}, c)
	if err != nil {
		return Layer{}, "", err
	}
	diffHash := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(cw, diffHash))
	var roots []RootType
	err = writeParents(tw, entryTime)
	for _, p := range paths {
		if err != nil {
			break
		}
		var root RootType
		root, err = convertPath(ctx, srcs.of(p), tw, p)
		roots = append(roots, root)
	}
	if err == nil {
		err = tw.Close()
	}
	if cerr := cw.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		return Layer{}, "", err
	}
	keep = true
	return Layer{
		Descriptor: ocispec.Descriptor{
			MediaType: c.MediaType(),
			Digest:    digest.NewDigest(digest.SHA256, blobHash),
			Size:      size.Load(),
		},
		DiffID:    digest.NewDigest(digest.SHA256, diffHash),
		Paths:     paths,
		RootTypes: roots,
	}, f.Name(), nil
}

// convertPath writes one store path's tar entries, reading its NAR blob
// and checking both the blob digest and the NAR hash as it goes.
func convertPath(ctx context.Context, src backend.Target, tw *tar.Writer, p artifact.PathArtifact) (RootType, error) {
	narHash := sha256.New()
	var root RootType
	err := readNAR(ctx, src, p, func(nar io.Reader) (err error) {
		root, err = writeNAR(tw, p.Info.StorePath, io.TeeReader(nar, narHash))
		return err
	})
	if err != nil {
		return "", err
	}
	if got, _ := narinfo.HashFromDigest(narHash.Sum(nil)); got != p.Info.NarHash {
		return "", fmt.Errorf("%s: NAR hashes to %s, its narinfo says %s: %w", p.Info.StorePath, got, p.Info.NarHash, artifact.ErrHashMismatch)
	}
	return root, nil
}

// readNAR streams p's NAR blob from src, decompressed, to use, and
// checks the blob's size and digest. A blob that does not match is
// reported as such rather than any error use returned: it explains them.
// use's errors name the store path.
func readNAR(ctx context.Context, src backend.Target, p artifact.PathArtifact, use func(nar io.Reader) error) error {
	rc, err := src.Fetch(ctx, p.NAR)
	if err != nil {
		return fmt.Errorf("%s: fetching NAR: %w", p.Info.StorePath, err)
	}
	blob, err := backend.VerifyReader(rc, p.NAR)
	if err != nil {
		return fmt.Errorf("%s: %w", p.Info.StorePath, err)
	}
	defer blob.Close()
	comp, _ := spec.CompressionOfMediaType(p.NAR.MediaType)
	dec, err := codec.NewReader(blob, comp)
	if err != nil {
		err = fmt.Errorf("%s: %w", p.Info.StorePath, err)
	} else {
		err = use(dec)
		dec.Close()
	}
	// Reading to the end (a decompressor may stop before it, at padding)
	// is what checks the blob.
	_, verr := io.Copy(io.Discard, blob)
	switch {
	case errors.Is(verr, backend.ErrHashMismatch):
		return fmt.Errorf("%s: NAR blob is corrupt: %w", p.Info.StorePath, verr)
	case err != nil:
		return err
	case verr != nil:
		return fmt.Errorf("%s: reading NAR blob: %w", p.Info.StorePath, verr)
	}
	return nil
}

// layerTag is the tag of the artifact that records the layer of paths.
func layerTag(paths []artifact.PathArtifact, c spec.LayerCompression) string {
	hashes := make([]string, len(paths))
	for i, p := range paths {
		hashes[i] = spec.PathTag(p.Info.StorePath)
	}
	return spec.LayerTag(hashes, c)
}

// layerAnnotations are the annotations of a layer in an image manifest.
func layerAnnotations(l Layer) map[string]string {
	a := map[string]string{spec.AnnotationVersion: spec.Version}
	var paths, manifests []string
	for _, p := range l.Paths {
		paths = append(paths, p.Info.StorePath)
		manifests = append(manifests, p.Manifest.Digest.String())
	}
	a[spec.AnnotationStorePath] = strings.Join(paths, " ")
	a[spec.AnnotationPathManifest] = strings.Join(manifests, " ")
	return a
}

// layerArtifact is the manifest recording a converted layer for reuse.
func layerArtifact(l Layer) ([]byte, ocispec.Descriptor, error) {
	var hashes, roots []string
	for i, p := range l.Paths {
		hashes = append(hashes, p.Info.NarHash)
		roots = append(roots, string(l.RootTypes[i]))
	}
	a := layerAnnotations(l)
	a[spec.AnnotationNarHash] = strings.Join(hashes, " ")
	a[spec.AnnotationDiffID] = l.DiffID.String()
	a[spec.AnnotationRootTypes] = strings.Join(roots, " ")
	desc := l.Descriptor
	desc.Annotations = nil
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: spec.ArtifactTypeLayer,
		Config:       spec.EmptyConfig,
		Layers:       []ocispec.Descriptor{desc},
		Annotations:  a,
	}
	data, err := json.Marshal(m)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	return data, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: spec.ArtifactTypeLayer, Digest: digest.FromBytes(data), Size: int64(len(data))}, nil
}

// findLayer looks up a stored layer of paths; it reports false if there is
// none or it no longer matches the paths' NARs.
func findLayer(ctx context.Context, dst backend.Target, paths []artifact.PathArtifact, c spec.LayerCompression) (Layer, bool, error) {
	desc, data, err := backend.FetchManifest(ctx, dst, layerTag(paths, c))
	if errors.Is(err, errdef.ErrNotFound) {
		return Layer{}, false, nil
	} else if err != nil {
		return Layer{}, false, fmt.Errorf("layer artifact %s: %w", layerTag(paths, c), err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return Layer{}, false, fmt.Errorf("layer artifact %s: %w", desc.Digest, err)
	}
	var hashes []string
	for _, p := range paths {
		hashes = append(hashes, p.Info.NarHash)
	}
	a := m.Annotations
	if m.ArtifactType != spec.ArtifactTypeLayer || len(m.Layers) != 1 || a[spec.AnnotationNarHash] != strings.Join(hashes, " ") {
		return Layer{}, false, nil // stale or foreign: convert again
	}
	diffID, err := digest.Parse(a[spec.AnnotationDiffID])
	if err != nil {
		return Layer{}, false, nil
	}
	if ok, err := dst.Exists(ctx, m.Layers[0]); err != nil || !ok {
		return Layer{}, false, err
	}
	var roots []RootType
	for _, r := range strings.Fields(a[spec.AnnotationRootTypes]) {
		roots = append(roots, RootType(r))
	}
	if len(roots) != len(paths) {
		return Layer{}, false, nil
	}
	return Layer{Descriptor: m.Layers[0], DiffID: diffID, Paths: paths, RootTypes: roots, Reused: true}, true, nil
}
