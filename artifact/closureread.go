package artifact

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// Closure is a stored closure as read back from its tag: the manifest (or
// index) the tag names and what it lists.
type Closure struct {
	Descriptor ocispec.Descriptor
	// Version is the closure's format version: "1" (a manifest of NAR and
	// narinfo layers, or an index of such parts) or "2" (an index of path
	// manifests).
	Version   string
	Roots     []string
	PathCount int
	Parts     int // 1 unless the closure was split
	// Layers are the NAR and narinfo layers and the nix-cache-info layer
	// of a version 1 closure, in order (nil for version 2: see
	// BinaryCacheLayers).
	Layers []ocispec.Descriptor
	// PathManifests are the descriptors of a version 2 closure's path
	// manifests, sorted by store path, each annotated with its store path.
	PathManifests []ocispec.Descriptor
	// CacheInfoManifest is the manifest holding a version 2 closure's
	// nix-cache-info layer.
	CacheInfoManifest ocispec.Descriptor
	// Files are the entries of the file artifacts a version 2 closure
	// lists (SPEC.md section 12.6), each annotated with the store path it
	// belongs to, one of PathManifests'.
	Files []ocispec.Descriptor
	// Digests lists the closure manifests this describes: Descriptor's
	// alone, unless several closures were merged (image.BuildUnion).
	Digests []string
}

// manifestProbe reads the fields of a manifest or index that tell what
// it is.
type manifestProbe struct {
	MediaType    string               `json:"mediaType"`
	ArtifactType string               `json:"artifactType"`
	Annotations  map[string]string    `json:"annotations"`
	Layers       []ocispec.Descriptor `json:"layers"`
	Manifests    []ocispec.Descriptor `json:"manifests"`
	Subject      *ocispec.Descriptor  `json:"subject"`
}

// ReadClosure resolves reference (a tag or digest) in t and reads the
// closure it names, of either format version, following an index to its
// parts. A store path's own manifest reads as a closure of one.
func ReadClosure(ctx context.Context, t backend.Target, reference string) (*Closure, error) {
	desc, data, err := backend.FetchManifest(ctx, t, reference)
	if err != nil {
		return nil, err
	}
	return ParseClosure(ctx, t, reference, desc, data)
}

// ParseClosure reads the closure whose top manifest or index (desc, data)
// was fetched from t by reference; parts are fetched from t.
func ParseClosure(ctx context.Context, t backend.Target, reference string, desc ocispec.Descriptor, data []byte) (*Closure, error) {
	var probe manifestProbe
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("%s: %w", reference, err)
	}
	switch probe.ArtifactType {
	case spec.ArtifactTypePath:
		// A single store path reads as a closure of one (without
		// nix-cache-info), so it can be inspected and pulled too.
		art, err := ParsePathManifest(desc, data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", reference, err)
		}
		return &Closure{Descriptor: desc, Version: spec.Version, Roots: []string{art.Info.StorePath}, PathCount: 1, Parts: 1,
			Layers: []ocispec.Descriptor{art.NAR, art.NarInfo}, Digests: []string{desc.Digest.String()}}, nil
	case spec.ArtifactTypeClosure:
		return readClosureV1(ctx, t, reference, desc, probe)
	case spec.ArtifactTypeClosureV2, spec.ArtifactTypeClosureFiles:
		return readClosureV2(ctx, t, reference, desc, probe)
	}
	return nil, fmt.Errorf("%s: artifactType %q is not a nixoci closure: %w", reference, probe.ArtifactType, ErrNotArtifact)
}

func newClosure(reference string, desc ocispec.Descriptor, probe manifestProbe, version string) (*Closure, error) {
	if v := probe.Annotations[spec.AnnotationVersion]; v != version {
		return nil, fmt.Errorf("%s: %s has format version %q, want %q: %w", reference, probe.ArtifactType, v, version, ErrNotArtifact)
	}
	c := &Closure{
		Descriptor: desc,
		Version:    version,
		Digests:    []string{desc.Digest.String()},
		Roots:      strings.Fields(probe.Annotations[spec.AnnotationRoots]),
		Parts:      1,
	}
	c.PathCount, _ = strconv.Atoi(probe.Annotations[spec.AnnotationPathCount])
	return c, nil
}

func readClosureV1(ctx context.Context, t backend.Target, reference string, desc ocispec.Descriptor, probe manifestProbe) (*Closure, error) {
	c, err := newClosure(reference, desc, probe, spec.Version)
	if err != nil {
		return nil, err
	}
	switch desc.MediaType {
	case ocispec.MediaTypeImageManifest:
		c.Layers = probe.Layers
	case ocispec.MediaTypeImageIndex:
		c.Parts = len(probe.Manifests)
		for _, m := range probe.Manifests {
			part, err := fetchProbe(ctx, t, m, spec.ArtifactTypeClosurePart)
			if err != nil {
				return nil, fmt.Errorf("%s: part %w", reference, err)
			}
			c.Layers = append(c.Layers, part.Layers...)
		}
	default:
		return nil, fmt.Errorf("%s: unexpected media type %q: %w", reference, desc.MediaType, ErrNotArtifact)
	}
	return c, nil
}

func readClosureV2(ctx context.Context, t backend.Target, reference string, desc ocispec.Descriptor, probe manifestProbe) (*Closure, error) {
	c, err := newClosure(reference, desc, probe, spec.ClosureVersion)
	if err != nil {
		return nil, err
	}
	if desc.MediaType != ocispec.MediaTypeImageIndex {
		return nil, fmt.Errorf("%s: a version 2 closure is an image index, not %q: %w", reference, desc.MediaType, ErrNotArtifact)
	}
	entries := probe.Manifests
	if len(entries) > 0 && entries[0].ArtifactType == spec.ArtifactTypeClosurePartV2 {
		c.Parts = len(entries)
		entries = nil
		for _, m := range probe.Manifests {
			part, err := fetchProbe(ctx, t, m, spec.ArtifactTypeClosurePartV2)
			if err != nil {
				return nil, fmt.Errorf("%s: part %w", reference, err)
			}
			entries = append(entries, part.Manifests...)
		}
	}
	for _, e := range entries {
		switch e.ArtifactType {
		case spec.ArtifactTypePath:
			if !strings.HasPrefix(e.Annotations[spec.AnnotationStorePath], "/") {
				return nil, fmt.Errorf("%s: path manifest %s has no store path: %w", reference, e.Digest, ErrNotArtifact)
			}
			c.PathManifests = append(c.PathManifests, e)
		case spec.ArtifactTypeCacheInfo:
			c.CacheInfoManifest = e
		case spec.ArtifactTypeLog, spec.ArtifactTypeRealisation, spec.ArtifactTypeListing, spec.ArtifactTypeDebugInfo:
			if probe.ArtifactType != spec.ArtifactTypeClosureFiles {
				return nil, fmt.Errorf("%s: entry %s is a %s, which a %s does not list: %w", reference, e.Digest, e.ArtifactType, probe.ArtifactType, ErrNotArtifact)
			}
			c.Files = append(c.Files, e)
		default:
			return nil, fmt.Errorf("%s: entry %s has artifactType %q: %w", reference, e.Digest, e.ArtifactType, ErrNotArtifact)
		}
	}
	if c.CacheInfoManifest.Digest == "" {
		return nil, fmt.Errorf("%s: no nix-cache-info manifest: %w", reference, ErrNotArtifact)
	}
	if len(c.PathManifests) != c.PathCount {
		return nil, fmt.Errorf("%s: lists %d path manifests, its annotation says %d: %w", reference, len(c.PathManifests), c.PathCount, ErrNotArtifact)
	}
	if len(c.Files) > 0 {
		members := make(map[string]bool, len(c.PathManifests))
		for _, p := range c.PathManifests {
			members[p.Annotations[spec.AnnotationStorePath]] = true
		}
		for _, f := range c.Files {
			if !members[f.Annotations[spec.AnnotationStorePath]] {
				return nil, fmt.Errorf("%s: %s %s belongs to %q, which the closure does not list: %w", reference, f.ArtifactType, f.Digest, f.Annotations[spec.AnnotationStorePath], ErrNotArtifact)
			}
		}
	} else if probe.ArtifactType == spec.ArtifactTypeClosureFiles {
		return nil, fmt.Errorf("%s: a %s listing no file: %w", reference, probe.ArtifactType, ErrNotArtifact)
	}
	return c, nil
}

// fetchProbe fetches the manifest or index desc names and checks its
// artifact type.
func fetchProbe(ctx context.Context, t backend.Target, desc ocispec.Descriptor, artifactType string) (manifestProbe, error) {
	var p manifestProbe
	data, err := backend.FetchAll(ctx, t, desc, backend.MaxManifestRead)
	if err != nil {
		return p, fmt.Errorf("%s: %w", desc.Digest, err)
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return p, fmt.Errorf("%s: %w", desc.Digest, err)
	}
	if p.ArtifactType != artifactType {
		return p, fmt.Errorf("%s has artifactType %q, want %q: %w", desc.Digest, p.ArtifactType, artifactType, ErrNotArtifact)
	}
	return p, nil
}

// ClosurePaths reads the artifact of every store path of c from t: by
// digest for a version 2 closure (so a closure copied by its tag alone
// reads where it was copied to), by tag for version 1, at most jobs at a
// time.
func ClosurePaths(ctx context.Context, t backend.Target, c *Closure, jobs int) ([]PathArtifact, error) {
	if c.Version == spec.ClosureVersion {
		paths := make([]PathArtifact, len(c.PathManifests))
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(max(jobs, 1))
		for i, d := range c.PathManifests {
			if art, ok := PathFromEntry(d); ok {
				paths[i] = art
				continue
			}
			g.Go(func() (err error) {
				paths[i], err = FetchPathManifest(gctx, t, d)
				if err == nil && paths[i].Info.StorePath != d.Annotations[spec.AnnotationStorePath] {
					err = fmt.Errorf("manifest %s holds %s, the closure says %s: %w", d.Digest, paths[i].Info.StorePath, d.Annotations[spec.AnnotationStorePath], ErrNotArtifact)
				}
				return err
			})
		}
		return paths, g.Wait()
	}
	var hashes []string
	seen := map[string]bool{}
	for _, l := range c.Layers {
		h := strings.TrimSuffix(l.Annotations[spec.AnnotationTitle], ".narinfo")
		if l.MediaType == spec.MediaTypeNarInfo && !seen[h] {
			seen[h] = true
			hashes = append(hashes, h)
		}
	}
	paths := make([]PathArtifact, len(hashes))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(jobs, 1))
	for i, h := range hashes {
		g.Go(func() (err error) {
			paths[i], err = FetchPathByHash(gctx, t, h)
			return err
		})
	}
	return paths, g.Wait()
}

// BinaryCacheLayers lists the layers that make c a binary cache
// directory (each titled with its file name): NARs (each distinct digest
// once) and narinfos in store-path order, then the layers of the file
// artifacts it lists (realisations, logs, listings, debug-info entries),
// then nix-cache-info. For a version 2 closure this reads its path
// manifests and file artifacts, jobs at a time.
func BinaryCacheLayers(ctx context.Context, t backend.Target, c *Closure, jobs int) ([]ocispec.Descriptor, error) {
	if c.Version != spec.ClosureVersion {
		return c.Layers, nil
	}
	paths, err := ClosurePaths(ctx, t, c, jobs)
	if err != nil {
		return nil, err
	}
	cim, err := fetchManifestOf(ctx, t, c.CacheInfoManifest, spec.ArtifactTypeCacheInfo)
	if err != nil {
		return nil, fmt.Errorf("nix-cache-info manifest %w", err)
	}
	if len(cim.Layers) != 1 || cim.Layers[0].MediaType != spec.MediaTypeCacheInfo {
		return nil, fmt.Errorf("nix-cache-info manifest %s: want one %s layer: %w", c.CacheInfoManifest.Digest, spec.MediaTypeCacheInfo, ErrNotArtifact)
	}
	seen := map[string]bool{}
	var layers []ocispec.Descriptor
	for _, p := range paths {
		if !seen[p.NAR.Digest.String()] {
			seen[p.NAR.Digest.String()] = true
			layers = append(layers, p.NAR)
		}
		layers = append(layers, p.NarInfo)
	}
	files, err := ClosureFiles(ctx, t, c, jobs)
	if err != nil {
		return nil, err
	}
	for _, cf := range files {
		for _, f := range cf.Artifact.Files {
			if !seen[f.Digest.String()+f.Title] {
				seen[f.Digest.String()+f.Title] = true
				layers = append(layers, f.Descriptor())
			}
		}
	}
	return append(layers, cim.Layers[0]), nil
}

// fetchManifestOf fetches the image manifest desc names and checks its
// artifact type.
func fetchManifestOf(ctx context.Context, t backend.Target, desc ocispec.Descriptor, artifactType string) (ocispec.Manifest, error) {
	var m ocispec.Manifest
	data, err := backend.FetchAll(ctx, t, desc, backend.MaxManifestRead)
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("%s: %w", desc.Digest, err)
	}
	if m.ArtifactType != artifactType {
		return m, fmt.Errorf("%s has artifactType %q, want %q: %w", desc.Digest, m.ArtifactType, artifactType, ErrNotArtifact)
	}
	return m, nil
}
