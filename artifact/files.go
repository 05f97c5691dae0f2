package artifact

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// File is one binary-cache file an artifact holds: a layer titled with
// its path in a binary cache, so that `oras pull` writes it where `nix
// copy --to file://` would.
type File struct {
	Title     string
	MediaType string
	Digest    digest.Digest
	Size      int64
	// Open returns the content; it may be called again if a push is
	// retried. Nil for a file read back (see FetchFileArtifact).
	Open func() (io.Reader, error)
}

// BytesFile is a File held in memory.
func BytesFile(title, mediaType string, data []byte) File {
	return File{Title: title, MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data)),
		Open: func() (io.Reader, error) { return bytes.NewReader(data), nil }}
}

// Descriptor is the file's layer descriptor.
func (f File) Descriptor() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: f.MediaType, Digest: f.Digest, Size: f.Size,
		Annotations: map[string]string{spec.AnnotationTitle: f.Title}}
}

// FileArtifact is the artifact of a build log, realisation, NAR listing
// or debug-info entry (SPEC.md section 12): an image manifest of
// artifactType Type, config the empty descriptor, one layer per file.
type FileArtifact struct {
	Type        string
	Annotations map[string]string // besides dev.nixoci.version
	Files       []File
	Manifest    ocispec.Descriptor // set by Marshal and FetchFileArtifact
}

// Marshal returns the manifest (and sets fa.Manifest).
func (fa *FileArtifact) Marshal() ([]byte, error) {
	a := maps.Clone(fa.Annotations)
	if a == nil {
		a = map[string]string{}
	}
	a[spec.AnnotationVersion] = spec.Version
	layers := make([]ocispec.Descriptor, len(fa.Files))
	for i, f := range fa.Files {
		layers[i] = f.Descriptor()
	}
	data, desc, err := marshalManifest(ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: fa.Type,
		Config:       spec.EmptyConfig,
		Layers:       layers,
		Annotations:  a,
	})
	fa.Manifest = desc
	return data, err
}

// StoreFileArtifact writes fa to dst, blobs first, then the manifest
// under its first tag, then its other tags.
func StoreFileArtifact(ctx context.Context, dst backend.Target, fa *FileArtifact, tags ...string) error {
	if len(tags) == 0 {
		return fmt.Errorf("storing %s: no tag", fa.Type)
	}
	if err := backend.PushBytes(ctx, dst, spec.EmptyConfig, spec.EmptyConfigData); err != nil {
		return err
	}
	for _, f := range fa.Files {
		if err := pushFile(ctx, dst, f); err != nil {
			return err
		}
	}
	data, err := fa.Marshal()
	if err != nil {
		return err
	}
	if err := dst.PushReference(ctx, fa.Manifest, bytes.NewReader(data), tags[0]); err != nil {
		return fmt.Errorf("storing %s: %w", tags[0], err)
	}
	for _, tag := range tags[1:] {
		if err := dst.Tag(ctx, fa.Manifest, tag); err != nil {
			return fmt.Errorf("tagging %s: %w", tag, err)
		}
	}
	return nil
}

// pushFile stores f's content unless dst has it, closing what f.Open
// returned if it is an io.Closer.
func pushFile(ctx context.Context, dst backend.Target, f File) error {
	if ok, err := dst.Exists(ctx, f.Descriptor()); err == nil && ok {
		return nil
	}
	r, err := f.Open()
	if err != nil {
		return fmt.Errorf("storing %s: %w", f.Title, err)
	}
	if c, ok := r.(io.Closer); ok {
		defer c.Close()
	}
	if err := backend.PushBlob(ctx, dst, f.Descriptor(), r); err != nil {
		return fmt.Errorf("storing %s: %w", f.Title, err)
	}
	return nil
}

// NewLogArtifact is the artifact of the build log f of the derivation
// drvPath (absolute): one layer, titled log/<drv base name>, and the
// annotation dev.nixoci.drv-path (SPEC.md section 12.1).
func NewLogArtifact(drvPath string, f File) *FileArtifact {
	return &FileArtifact{Type: spec.ArtifactTypeLog, Annotations: map[string]string{spec.AnnotationDrvPath: drvPath}, Files: []File{f}}
}

// FetchFileArtifact reads the manifest tag names and checks that it is a
// file artifact of type artifactType, with at least one layer and at
// most 4. Its files come without content: fetch each by its descriptor.
// A missing tag wraps errdef.ErrNotFound; anything else under the tag
// wraps ErrNotArtifact.
func FetchFileArtifact(ctx context.Context, t backend.Target, tag, artifactType string) (*FileArtifact, error) {
	desc, data, err := backend.FetchManifest(ctx, t, tag)
	if err != nil {
		return nil, err
	}
	fa, err := ParseFileArtifact(desc, data, artifactType)
	if err != nil {
		return nil, fmt.Errorf("tag %s: %w", tag, err)
	}
	return fa, nil
}

// ParseFileArtifact reads a file artifact from its manifest.
func ParseFileArtifact(desc ocispec.Descriptor, data []byte, artifactType string) (*FileArtifact, error) {
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w: %v", desc.Digest, ErrNotArtifact, err)
	}
	switch {
	case m.ArtifactType != artifactType:
		return nil, fmt.Errorf("manifest %s: artifactType %q, want %q: %w", desc.Digest, m.ArtifactType, artifactType, ErrNotArtifact)
	case m.Annotations[spec.AnnotationVersion] != spec.Version:
		return nil, fmt.Errorf("manifest %s: format version %q, this nixoci reads %q: %w", desc.Digest, m.Annotations[spec.AnnotationVersion], spec.Version, ErrNotArtifact)
	case len(m.Layers) == 0 || len(m.Layers) > 4:
		return nil, fmt.Errorf("manifest %s: %d layers: %w", desc.Digest, len(m.Layers), ErrNotArtifact)
	}
	fa := &FileArtifact{Type: m.ArtifactType, Annotations: m.Annotations, Manifest: desc}
	fa.Manifest.ArtifactType = m.ArtifactType
	for _, l := range m.Layers {
		if l.Size < 0 || l.Digest.Validate() != nil {
			return nil, fmt.Errorf("manifest %s: layer %s: %w", desc.Digest, l.Digest, ErrNotArtifact)
		}
		fa.Files = append(fa.Files, File{Title: l.Annotations[spec.AnnotationTitle], MediaType: l.MediaType, Digest: l.Digest, Size: l.Size})
	}
	return fa, nil
}

// File returns the artifact's file of media type mediaType.
func (fa *FileArtifact) File(mediaType string) (File, bool) {
	for _, f := range fa.Files {
		if f.MediaType == mediaType {
			return f, true
		}
	}
	return File{}, false
}

// ReadFile fetches a file of an artifact read back, at most limit bytes,
// checked against its digest.
func ReadFile(ctx context.Context, t backend.Target, f File, limit int64) ([]byte, error) {
	if f.Size > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d allowed: %w", f.Title, f.Size, limit, ErrNotArtifact)
	}
	return backend.FetchAll(ctx, t, f.Descriptor(), limit)
}
