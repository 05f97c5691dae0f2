package artifact

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// PathArtifact is one store path as stored: its narinfo, the descriptors
// of its two blobs (with their title annotations) and of its manifest.
type PathArtifact struct {
	Info     *narinfo.NarInfo
	NAR      ocispec.Descriptor
	NarInfo  ocispec.Descriptor
	Manifest ocispec.Descriptor
}

func blobDescriptor(mediaType string, data []byte, title string) ocispec.Descriptor {
	return ocispec.Descriptor{
		MediaType:   mediaType,
		Digest:      digest.FromBytes(data),
		Size:        int64(len(data)),
		Annotations: map[string]string{spec.AnnotationTitle: title},
	}
}

// narDescriptor describes the compressed NAR that info's FileHash and
// FileSize name.
func narDescriptor(info *narinfo.NarInfo) (ocispec.Descriptor, error) {
	c, err := spec.ParseCompression(info.Compression)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%s: %w", info.StorePath, err)
	}
	hexHash, err := narinfo.HashDigestHex(info.FileHash)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%s: FileHash: %w", info.StorePath, err)
	}
	return ocispec.Descriptor{
		MediaType:   c.MediaType(),
		Digest:      digest.NewDigestFromEncoded(digest.SHA256, hexHash),
		Size:        int64(info.FileSize),
		Annotations: map[string]string{spec.AnnotationTitle: info.URL},
	}, nil
}

// pathAnnotations are the manifest annotations of a store path: what a
// substituter needs besides the NAR layer's descriptor.
func pathAnnotations(info *narinfo.NarInfo) map[string]string {
	a := map[string]string{
		spec.AnnotationVersion:    spec.Version,
		spec.AnnotationStorePath:  info.StorePath,
		spec.AnnotationNarHash:    info.NarHash,
		spec.AnnotationNarSize:    strconv.FormatUint(info.NarSize, 10),
		spec.AnnotationReferences: strings.Join(sortedCopy(info.References), " "),
	}
	set := func(k, v string) {
		if v != "" {
			a[k] = v
		}
	}
	set(spec.AnnotationDeriver, info.Deriver)
	set(spec.AnnotationSystem, info.System)
	set(spec.AnnotationSigs, strings.Join(info.Sigs, " "))
	set(spec.AnnotationCA, info.CA)
	return a
}

// NewPathArtifact builds the artifact of info, whose FileHash, FileSize,
// Compression and URL already describe its compressed NAR. It returns the
// manifest and narinfo bytes to store along with the NAR blob.
func NewPathArtifact(in *narinfo.NarInfo) (art PathArtifact, manifest, narinfoData []byte, err error) {
	// The narinfo blob and the annotations must say the same thing:
	// normalise hashes to sha256:<nix32> and sort references (as Nix
	// writes them) before writing either.
	info := *in
	info.References = sortedCopy(in.References)
	for _, h := range []*string{&info.NarHash, &info.FileHash} {
		if *h == "" {
			continue
		}
		if *h, err = narinfo.NormaliseHash(*h); err != nil {
			return PathArtifact{}, nil, nil, fmt.Errorf("%s: %w", info.StorePath, err)
		}
	}
	narinfoData, err = info.Format()
	if err != nil {
		return PathArtifact{}, nil, nil, fmt.Errorf("%s: %w", info.StorePath, err)
	}
	narDesc, err := narDescriptor(&info)
	if err != nil {
		return PathArtifact{}, nil, nil, err
	}
	niDesc := blobDescriptor(spec.MediaTypeNarInfo, narinfoData, info.HashPart()+".narinfo")
	manifest, mdesc, err := marshalManifest(ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: spec.ArtifactTypePath,
		Config:       spec.EmptyConfig,
		Layers:       []ocispec.Descriptor{narDesc, niDesc},
		Annotations:  pathAnnotations(&info),
	})
	if err != nil {
		return PathArtifact{}, nil, nil, err
	}
	return PathArtifact{Info: &info, NAR: narDesc, NarInfo: niDesc, Manifest: mdesc}, manifest, narinfoData, nil
}

func marshalManifest(m ocispec.Manifest) ([]byte, ocispec.Descriptor, error) {
	data, err := json.Marshal(m)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	return data, ocispec.Descriptor{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: m.ArtifactType,
		Digest:       digest.FromBytes(data),
		Size:         int64(len(data)),
	}, nil
}

// ParsePathManifest reads a store path's artifact back from its manifest:
// the narinfo comes from the annotations and the NAR layer alone, as a
// substituter renders it without fetching the narinfo blob.
func ParsePathManifest(desc ocispec.Descriptor, data []byte) (PathArtifact, error) {
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return PathArtifact{}, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	if m.ArtifactType != spec.ArtifactTypePath {
		return PathArtifact{}, fmt.Errorf("manifest %s: artifactType %q, want %q: %w", desc.Digest, m.ArtifactType, spec.ArtifactTypePath, ErrNotArtifact)
	}
	a := m.Annotations
	size := 0
	for k, v := range a {
		size += len(k) + len(v)
	}
	if size > narinfo.MaxSize {
		return PathArtifact{}, fmt.Errorf("manifest %s: %d bytes of annotations, over the %d-byte narinfo limit: %w", desc.Digest, size, narinfo.MaxSize, ErrNotArtifact)
	}
	if v := a[spec.AnnotationVersion]; v != spec.Version {
		return PathArtifact{}, fmt.Errorf("manifest %s: format version %q, this nixoci reads %q: %w", desc.Digest, v, spec.Version, ErrNotArtifact)
	}
	if len(m.Layers) != 2 {
		return PathArtifact{}, fmt.Errorf("manifest %s: %d layers, want a NAR and a narinfo: %w", desc.Digest, len(m.Layers), ErrNotArtifact)
	}
	narDesc, niDesc := m.Layers[0], m.Layers[1]
	comp, ok := spec.CompressionOfMediaType(narDesc.MediaType)
	if !ok || niDesc.MediaType != spec.MediaTypeNarInfo {
		return PathArtifact{}, fmt.Errorf("manifest %s: layers %s, %s; want a NAR and a narinfo: %w", desc.Digest, narDesc.MediaType, niDesc.MediaType, ErrNotArtifact)
	}
	narSize, err := strconv.ParseUint(a[spec.AnnotationNarSize], 10, 64)
	if err != nil {
		return PathArtifact{}, fmt.Errorf("manifest %s: %s: %w: %w", desc.Digest, spec.AnnotationNarSize, ErrNotArtifact, err)
	}
	fileHash, err := narinfo.HashFromHex(narDesc.Digest.Encoded())
	if err != nil {
		return PathArtifact{}, fmt.Errorf("manifest %s: NAR digest: %w", desc.Digest, err)
	}
	info := &narinfo.NarInfo{
		StorePath:   a[spec.AnnotationStorePath],
		URL:         narDesc.Annotations[spec.AnnotationTitle],
		Compression: string(comp),
		FileHash:    fileHash,
		FileSize:    uint64(narDesc.Size),
		NarHash:     a[spec.AnnotationNarHash],
		NarSize:     narSize,
		References:  strings.Fields(a[spec.AnnotationReferences]),
		Deriver:     a[spec.AnnotationDeriver],
		System:      a[spec.AnnotationSystem],
		Sigs:        strings.Fields(a[spec.AnnotationSigs]),
		CA:          a[spec.AnnotationCA],
	}
	if info.References == nil {
		info.References = []string{}
	}
	if err := info.Validate(); err != nil {
		return PathArtifact{}, fmt.Errorf("manifest %s: %w: %w", desc.Digest, ErrNotArtifact, err)
	}
	if info.URL != spec.NarURL(strings.TrimPrefix(fileHash, "sha256:"), comp) {
		return PathArtifact{}, fmt.Errorf("manifest %s: NAR title %q does not match its digest: %w", desc.Digest, info.URL, ErrNotArtifact)
	}
	if t := niDesc.Annotations[spec.AnnotationTitle]; t != info.HashPart()+".narinfo" {
		return PathArtifact{}, fmt.Errorf("manifest %s of %s: narinfo layer titled %q: %w", desc.Digest, info.StorePath, t, ErrNotArtifact)
	}
	if desc.MediaType == "" {
		desc.MediaType = ocispec.MediaTypeImageManifest
	}
	desc.ArtifactType = spec.ArtifactTypePath
	return PathArtifact{Info: info, NAR: narDesc, NarInfo: niDesc, Manifest: desc}, nil
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}
