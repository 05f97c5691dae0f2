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

// ClosureIndex is what a version 2 closure stores besides its paths'
// artifacts (SPEC.md section 5): the nix-cache-info blob and the manifest
// holding it, the part indexes of a closure too large for one index, and
// the top index, which the closure tag names. The top index refers to
// every path manifest, so OCI copy tools carry them along, and its subject
// is the first root's path manifest, so the closure is found from its root
// through the referrers API or the referrers tag schema.
type ClosureIndex struct {
	CacheInfo         Blob
	CacheInfoManifest Blob
	Parts             []Blob
	Top               Blob
}

// Blobs lists what the closure stores in write order: blobs and manifests
// before the indexes naming them, the top index last.
func (ci ClosureIndex) Blobs() []Blob {
	out := []Blob{ci.CacheInfo, ci.CacheInfoManifest}
	out = append(out, ci.Parts...)
	return append(out, ci.Top)
}

// NewClosureIndex lays out the version 2 closure of roots made of paths.
// The result depends only on the paths, never on push order. limit is the
// largest index to write (spec.MaxManifestSize if 0).
func NewClosureIndex(roots []string, paths []PathArtifact, storeDir string, limit int) (ClosureIndex, error) {
	return NewClosureIndexWithFiles(roots, paths, nil, storeDir, limit)
}

// NewClosureIndexWithFiles is NewClosureIndex listing also the file
// artifacts of its paths (SPEC.md section 12.6), each stored (its
// Artifact's Manifest set), after the paths, sorted by the path they
// belong to, artifact type and digest. Without files it is exactly
// NewClosureIndex's closure.
func NewClosureIndexWithFiles(roots []string, paths []PathArtifact, files []ClosureFile, storeDir string, limit int) (ClosureIndex, error) {
	if limit <= 0 {
		limit = spec.MaxManifestSize
	}
	if len(paths) == 0 {
		return ClosureIndex{}, fmt.Errorf("empty closure")
	}
	roots = sortedCopy(roots)
	sorted := append([]PathArtifact(nil), paths...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Info.StorePath < sorted[j].Info.StorePath })
	var subject *ocispec.Descriptor
	for _, p := range sorted {
		if p.Info.StorePath == roots[0] {
			subject = &ocispec.Descriptor{MediaType: p.Manifest.MediaType, Digest: p.Manifest.Digest, Size: p.Manifest.Size}
		}
	}
	if subject == nil {
		return ClosureIndex{}, fmt.Errorf("root %s is not in the closure", roots[0])
	}

	var out ClosureIndex
	ci := []byte(spec.CacheInfo(storeDir, spec.DefaultPriority))
	out.CacheInfo = Blob{blobDescriptor(spec.MediaTypeCacheInfo, ci, "nix-cache-info"), ci}
	cim, err := closureManifest(spec.ArtifactTypeCacheInfo, []ocispec.Descriptor{out.CacheInfo.Descriptor},
		map[string]string{spec.AnnotationVersion: spec.ClosureVersion})
	if err != nil {
		return out, err
	}
	out.CacheInfoManifest = cim

	entries := make([]ocispec.Descriptor, 0, len(sorted)+1)
	for _, p := range sorted {
		e, err := PathEntry(p)
		if err != nil {
			return out, err
		}
		entries = append(entries, e)
	}
	fileEntries, err := closureFileEntries(sorted, files)
	if err != nil {
		return out, err
	}
	entries = append(entries, fileEntries...)
	entries = append(entries, cim.Descriptor)
	artifactType := spec.ArtifactTypeClosureV2
	if len(fileEntries) > 0 {
		artifactType = spec.ArtifactTypeClosureFiles
	}
	annotations := map[string]string{
		spec.AnnotationVersion:   spec.ClosureVersion,
		spec.AnnotationRoots:     strings.Join(roots, " "),
		spec.AnnotationPathCount: strconv.Itoa(len(sorted)),
	}
	single, err := marshalIndex(artifactType, entries, subject, annotations)
	if err != nil {
		return out, err
	}
	if len(single.Data) <= limit {
		out.Top = single
		return out, nil
	}
	if out.Parts, err = splitIndex(entries, annotations, limit); err != nil {
		return out, err
	}
	partDescs := make([]ocispec.Descriptor, len(out.Parts))
	for i, p := range out.Parts {
		partDescs[i] = p.Descriptor
	}
	if out.Top, err = marshalIndex(artifactType, partDescs, subject, annotations); err != nil {
		return out, err
	}
	if len(out.Top.Data) > limit {
		return out, fmt.Errorf("closure of %d paths needs an index of %d bytes, over the %d-byte manifest limit", len(paths), len(out.Top.Data), limit)
	}
	return out, nil
}

// closureFileEntries are the index entries of files, sorted; each must
// belong to one of paths (sorted by store path), and each is listed once.
func closureFileEntries(paths []PathArtifact, files []ClosureFile) ([]ocispec.Descriptor, error) {
	entries := make([]ocispec.Descriptor, 0, len(files))
	seen := map[digest.Digest]bool{}
	for _, f := range files {
		if f.Artifact == nil || f.Artifact.Manifest.Digest == "" {
			return nil, fmt.Errorf("closure file of %s: not stored", f.StorePath)
		}
		if _, found := sort.Find(len(paths), func(i int) int { return strings.Compare(f.StorePath, paths[i].Info.StorePath) }); !found {
			return nil, fmt.Errorf("%s %s belongs to %s, which is not in the closure", f.Artifact.Type, f.Artifact.Manifest.Digest, f.StorePath)
		}
		if !seen[f.Artifact.Manifest.Digest] {
			seen[f.Artifact.Manifest.Digest] = true
			entries = append(entries, FileEntry(f))
		}
	}
	sort.Slice(entries, func(i, j int) bool {
		a, b := entries[i], entries[j]
		if x, y := a.Annotations[spec.AnnotationStorePath], b.Annotations[spec.AnnotationStorePath]; x != y {
			return x < y
		}
		if a.ArtifactType != b.ArtifactType {
			return a.ArtifactType < b.ArtifactType
		}
		return a.Digest < b.Digest
	})
	return entries, nil
}

// PathEntry is the descriptor by which a closure index lists a path's
// manifest: its artifact type, the store path, so that a reader maps
// store paths to manifests without fetching them, and the narinfo, from
// which the manifest follows (PathFromEntry), so that a reader learns a
// whole closure from its index alone.
func PathEntry(p PathArtifact) (ocispec.Descriptor, error) {
	text, err := p.Info.Format()
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%s: %w", p.Info.StorePath, err)
	}
	return ocispec.Descriptor{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: spec.ArtifactTypePath,
		Digest:       p.Manifest.Digest,
		Size:         p.Manifest.Size,
		Annotations:  map[string]string{spec.AnnotationStorePath: p.Info.StorePath, spec.AnnotationNarInfo: string(text)},
	}, nil
}

// splitIndex packs entries greedily, in order, into part indexes of at
// most limit bytes each.
func splitIndex(entries []ocispec.Descriptor, annotations map[string]string, limit int) ([]Blob, error) {
	// Sizes are measured, not estimated: a part is closed when adding the
	// next entry would cross the limit.
	base, err := marshalIndex(spec.ArtifactTypeClosurePartV2, nil, nil, partAnnotations(annotations, 999999, 999999))
	if err != nil {
		return nil, err
	}
	var sets [][]ocispec.Descriptor
	var cur []ocispec.Descriptor
	size := len(base.Data)
	for _, e := range entries {
		b, err := json.Marshal(e)
		if err != nil {
			return nil, err
		}
		esize := len(b) + 1 // comma
		if size+esize > limit && len(cur) > 0 {
			sets = append(sets, cur)
			cur, size = nil, len(base.Data)
		}
		if size+esize > limit {
			return nil, fmt.Errorf("one index entry does not fit in a %d-byte manifest", limit)
		}
		cur = append(cur, e)
		size += esize
	}
	sets = append(sets, cur)
	parts := make([]Blob, len(sets))
	for i, set := range sets {
		parts[i], err = marshalIndex(spec.ArtifactTypeClosurePartV2, set, nil, partAnnotations(annotations, i+1, len(sets)))
		if err != nil {
			return nil, err
		}
		if len(parts[i].Data) > limit {
			return nil, fmt.Errorf("closure part %d is %d bytes, over the %d-byte limit", i+1, len(parts[i].Data), limit)
		}
	}
	return parts, nil
}

func marshalIndex(artifactType string, manifests []ocispec.Descriptor, subject *ocispec.Descriptor, annotations map[string]string) (Blob, error) {
	if manifests == nil {
		manifests = []ocispec.Descriptor{}
	}
	data, err := json.Marshal(ocispec.Index{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageIndex,
		ArtifactType: artifactType,
		Manifests:    manifests,
		Subject:      subject,
		Annotations:  annotations,
	})
	if err != nil {
		return Blob{}, err
	}
	return Blob{ocispec.Descriptor{
		MediaType:    ocispec.MediaTypeImageIndex,
		ArtifactType: artifactType,
		Digest:       digest.FromBytes(data),
		Size:         int64(len(data)),
	}, data}, nil
}
