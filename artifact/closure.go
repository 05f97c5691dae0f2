package artifact

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/spec"
)

// Blob is content to store, with its descriptor.
type Blob struct {
	Descriptor ocispec.Descriptor
	Data       []byte
}

// ClosureManifests is what a version 1 closure (SPEC.md 5.4) stores
// besides its paths' blobs: the nix-cache-info blob, then either one manifest (Top) or, for
// a closure too large for one manifest, the part manifests (Parts) and an
// index listing them (Top). Top is what the closure tag names.
type ClosureManifests struct {
	CacheInfo Blob
	Parts     []Blob
	Top       Blob
}

// NewClosureManifests lays out the closure of roots made of paths. Paths
// are ordered by store path, each contributing its NAR layer (once per
// distinct digest) and its narinfo layer, followed by the nix-cache-info
// layer; the result depends only on the paths, never on push order.
// limit is the largest manifest to write (spec.MaxManifestSize if 0).
func NewClosureManifests(roots []string, paths []PathArtifact, storeDir string, limit int) (ClosureManifests, error) {
	if limit <= 0 {
		limit = spec.MaxManifestSize
	}
	if len(paths) == 0 {
		return ClosureManifests{}, fmt.Errorf("empty closure")
	}
	sorted := append([]PathArtifact(nil), paths...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Info.StorePath < sorted[j].Info.StorePath })

	ci := []byte(spec.CacheInfo(storeDir, spec.DefaultPriority))
	var out ClosureManifests
	out.CacheInfo = Blob{blobDescriptor(spec.MediaTypeCacheInfo, ci, "nix-cache-info"), ci}

	annotations := map[string]string{
		spec.AnnotationVersion:   spec.Version,
		spec.AnnotationRoots:     strings.Join(sortedCopy(roots), " "),
		spec.AnnotationPathCount: strconv.Itoa(len(sorted)),
	}
	// Group each path's layers so a split never separates a NAR from its
	// narinfo.
	seen := map[digest.Digest]bool{}
	var groups [][]ocispec.Descriptor
	for _, p := range sorted {
		var g []ocispec.Descriptor
		if !seen[p.NAR.Digest] {
			seen[p.NAR.Digest] = true
			g = append(g, p.NAR)
		}
		groups = append(groups, append(g, p.NarInfo))
	}
	groups = append(groups, []ocispec.Descriptor{out.CacheInfo.Descriptor})

	single, err := closureManifest(spec.ArtifactTypeClosure, flatten(groups), annotations)
	if err != nil {
		return out, err
	}
	if len(single.Data) <= limit {
		out.Top = single
		return out, nil
	}
	parts, err := splitClosure(groups, annotations, limit)
	if err != nil {
		return out, err
	}
	out.Parts = parts
	index := ocispec.Index{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageIndex,
		ArtifactType: spec.ArtifactTypeClosure,
		Annotations:  annotations,
	}
	for _, p := range parts {
		index.Manifests = append(index.Manifests, p.Descriptor)
	}
	data, err := json.Marshal(index)
	if err != nil {
		return out, err
	}
	if len(data) > limit {
		return out, fmt.Errorf("closure of %d paths needs an index of %d bytes, over the %d-byte manifest limit", len(paths), len(data), limit)
	}
	out.Top = Blob{ocispec.Descriptor{
		MediaType:    ocispec.MediaTypeImageIndex,
		ArtifactType: spec.ArtifactTypeClosure,
		Digest:       digest.FromBytes(data),
		Size:         int64(len(data)),
	}, data}
	return out, nil
}

// splitClosure packs groups greedily, in order, into part manifests of at
// most limit bytes each.
func splitClosure(groups [][]ocispec.Descriptor, annotations map[string]string, limit int) ([]Blob, error) {
	// Sizes are measured, not estimated: a part is closed when adding the
	// next group would cross the limit.
	var layerSets [][]ocispec.Descriptor
	var cur []ocispec.Descriptor
	base, err := closureManifest(spec.ArtifactTypeClosurePart, nil, partAnnotations(annotations, 999999, 999999))
	if err != nil {
		return nil, err
	}
	size := len(base.Data)
	for _, g := range groups {
		gsize := 0
		for _, d := range g {
			b, _ := json.Marshal(d)
			gsize += len(b) + 1 // comma
		}
		if size+gsize > limit && len(cur) > 0 {
			layerSets = append(layerSets, cur)
			cur, size = nil, len(base.Data)
		}
		if size+gsize > limit {
			return nil, fmt.Errorf("layers of one store path do not fit in a %d-byte manifest", limit)
		}
		cur = append(cur, g...)
		size += gsize
	}
	layerSets = append(layerSets, cur)
	parts := make([]Blob, len(layerSets))
	for i, layers := range layerSets {
		parts[i], err = closureManifest(spec.ArtifactTypeClosurePart, layers, partAnnotations(annotations, i+1, len(layerSets)))
		if err != nil {
			return nil, err
		}
		if len(parts[i].Data) > limit {
			return nil, fmt.Errorf("closure part %d is %d bytes, over the %d-byte limit", i+1, len(parts[i].Data), limit)
		}
	}
	return parts, nil
}

func partAnnotations(a map[string]string, i, n int) map[string]string {
	c := make(map[string]string, len(a)+1)
	for k, v := range a {
		c[k] = v
	}
	c[spec.AnnotationPart] = fmt.Sprintf("%d/%d", i, n)
	return c
}

func closureManifest(artifactType string, layers []ocispec.Descriptor, annotations map[string]string) (Blob, error) {
	if layers == nil {
		layers = []ocispec.Descriptor{}
	}
	data, desc, err := marshalManifest(ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: artifactType,
		Config:       spec.EmptyConfig,
		Layers:       layers,
		Annotations:  annotations,
	})
	return Blob{desc, data}, err
}

func flatten(groups [][]ocispec.Descriptor) []ocispec.Descriptor {
	var all []ocispec.Descriptor
	for _, g := range groups {
		all = append(all, g...)
	}
	return all
}
