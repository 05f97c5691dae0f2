package backend

import (
	"encoding/json"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// IsManifest reports whether mediaType is an OCI image manifest or index.
func IsManifest(mediaType string) bool { return isManifestType(mediaType) }

// Successors lists what the manifest or index data (described by desc)
// refers to: config, layers and subject of a manifest; manifests and
// subject of an index; nothing for anything else. It is oras-go's
// content.Successors for content already read.
func Successors(desc ocispec.Descriptor, data []byte) ([]ocispec.Descriptor, error) {
	var out []ocispec.Descriptor
	switch desc.MediaType {
	case ocispec.MediaTypeImageManifest:
		var m ocispec.Manifest
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
		}
		out = append(append(out, m.Config), m.Layers...)
		if m.Subject != nil {
			out = append(out, *m.Subject)
		}
	case ocispec.MediaTypeImageIndex:
		var idx ocispec.Index
		if err := json.Unmarshal(data, &idx); err != nil {
			return nil, fmt.Errorf("index %s: %w", desc.Digest, err)
		}
		out = append(out, idx.Manifests...)
		if idx.Subject != nil {
			out = append(out, *idx.Subject)
		}
	}
	return out, nil
}
