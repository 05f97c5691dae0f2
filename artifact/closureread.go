package artifact

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// Closure is a stored closure as read back from its tag: the manifest (or
// index) the tag names and the layers of all its parts.
type Closure struct {
	Descriptor ocispec.Descriptor
	Roots      []string
	PathCount  int
	Parts      int // 1 unless the closure was split
	Layers     []ocispec.Descriptor
	// Digests lists the closure manifests this describes: Descriptor's
	// alone, unless several closures were merged (image.BuildUnion).
	Digests []string
}

// ReadClosure resolves reference (a tag or digest) in t and reads the
// closure manifest, following an index to its parts.
func ReadClosure(ctx context.Context, t backend.Target, reference string) (*Closure, error) {
	desc, data, err := backend.FetchManifest(ctx, t, reference)
	if err != nil {
		return nil, err
	}
	var probe struct {
		MediaType    string               `json:"mediaType"`
		ArtifactType string               `json:"artifactType"`
		Annotations  map[string]string    `json:"annotations"`
		Layers       []ocispec.Descriptor `json:"layers"`
		Manifests    []ocispec.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("%s: %w", reference, err)
	}
	if probe.ArtifactType == spec.ArtifactTypePath {
		// A single store path reads as a closure of one (without
		// nix-cache-info), so it can be inspected and pulled too.
		art, err := ParsePathManifest(desc, data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", reference, err)
		}
		return &Closure{Descriptor: desc, Roots: []string{art.Info.StorePath}, PathCount: 1, Parts: 1,
			Layers: []ocispec.Descriptor{art.NAR, art.NarInfo}, Digests: []string{desc.Digest.String()}}, nil
	}
	if probe.ArtifactType != spec.ArtifactTypeClosure {
		return nil, fmt.Errorf("%s: artifactType %q is not a nixoci closure: %w", reference, probe.ArtifactType, ErrNotArtifact)
	}
	if v := probe.Annotations[spec.AnnotationVersion]; v != spec.Version {
		return nil, fmt.Errorf("%s: format version %q, this nixoci reads %q: %w", reference, v, spec.Version, ErrNotArtifact)
	}
	c := &Closure{
		Descriptor: desc,
		Digests:    []string{desc.Digest.String()},
		Roots:      strings.Fields(probe.Annotations[spec.AnnotationRoots]),
		Parts:      1,
	}
	c.PathCount, _ = strconv.Atoi(probe.Annotations[spec.AnnotationPathCount])
	switch desc.MediaType {
	case ocispec.MediaTypeImageManifest:
		c.Layers = probe.Layers
	case ocispec.MediaTypeImageIndex:
		c.Parts = len(probe.Manifests)
		for _, m := range probe.Manifests {
			pdata, err := backend.FetchAll(ctx, t, m, backend.MaxManifestRead)
			if err != nil {
				return nil, fmt.Errorf("%s: part %s: %w", reference, m.Digest, err)
			}
			var part ocispec.Manifest
			if err := json.Unmarshal(pdata, &part); err != nil {
				return nil, fmt.Errorf("%s: part %s: %w", reference, m.Digest, err)
			}
			if part.ArtifactType != spec.ArtifactTypeClosurePart {
				return nil, fmt.Errorf("%s: part %s has artifactType %q: %w", reference, m.Digest, part.ArtifactType, ErrNotArtifact)
			}
			c.Layers = append(c.Layers, part.Layers...)
		}
	default:
		return nil, fmt.Errorf("%s: unexpected media type %q: %w", reference, desc.MediaType, ErrNotArtifact)
	}
	return c, nil
}
