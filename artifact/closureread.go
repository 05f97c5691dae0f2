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
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// Closure is a stored closure as read back from its tag: the manifest (or
// index) the tag names and what it lists.
type Closure struct {
	Descriptor ocispec.Descriptor
	// Version is the closure's format version: spec.ClosureV1 (a
	// manifest of NAR and narinfo layers, or an index of such parts) or
	// spec.ClosureV2 (an index of path manifests).
	Version   string
	Roots     []string
	PathCount int
	Parts     int // 1 unless the closure was split
	// Layers are the NAR and narinfo layers and the nix-cache-info layer
	// of a version 1 closure, in order (nil for version 2: see
	// BinaryCacheLayers).
	Layers []ocispec.Descriptor
	// Members are the closure's store paths in the order it lists them
	// (by store path), each once.
	Members []Member
	// CacheInfoManifest is the manifest holding a version 2 closure's
	// nix-cache-info layer.
	CacheInfoManifest ocispec.Descriptor
	// Files are the entries of the file artifacts a version 2 closure
	// lists (SPEC.md section 12.6), each annotated with the store path it
	// belongs to, one of Members'.
	Files []ocispec.Descriptor
	// Digests lists the closure manifests this describes: Descriptor's
	// alone, unless several closures were merged (image.BuildUnion).
	Digests []string
}

// Member is one store path of a closure as its index lists it. Nothing
// in it is trusted beyond what the reader checked: the hash part is
// derived from the store path (or, in version 1, the narinfo layer's
// title) and validated; Path, when set, was rebuilt from the entry's
// narinfo into exactly the manifest the entry names.
type Member struct {
	Hash string
	// StorePath is the store path the entry names; "" in version 1,
	// whose layers name only the hash part.
	StorePath string
	// Manifest is the path manifest a version 2 entry names (media type,
	// artifact type, digest and size; no annotations); zero in version 1,
	// whose paths are found by tag.
	Manifest ocispec.Descriptor
	// Path is the path's artifact, verified from the entry alone
	// (PathFromEntry); nil if the entry carries no narinfo giving its
	// manifest, or the reader skipped them (ClosureReader.SkipPaths).
	Path *PathArtifact
}

// Claim is what the closure claims about the member: ResolvePath reads
// its artifact by manifest digest (version 2) or by tag (version 1) and
// checks it.
func (m Member) Claim() PathClaim {
	return PathClaim{Hash: m.Hash, StorePath: m.StorePath, Manifest: m.Manifest}
}

// Bounds of a ClosureReader's zero value. A version 2 entry takes about
// 1 KB, so a closure of DefaultMaxClosurePaths fills about 125 parts of
// 4 MiB; the part bound leaves room for entries twice as large, and
// bounds what one closure can make a reader fetch to 1 GiB of indexes.
const (
	DefaultMaxClosurePaths = 500_000
	DefaultMaxClosureParts = 256
)

// ClosureReader reads closures of either format version (SPEC.md section
// 5), bounded: the parts and entries of a closure are counted as they are
// read, and a closure over a bound is refused (ErrTooLarge) before more
// is fetched. The zero value reads with the default bounds; ReadClosure
// and ParseClosure use it.
type ClosureReader struct {
	// MaxPaths bounds the store paths of one closure; default
	// DefaultMaxClosurePaths.
	MaxPaths int
	// MaxParts bounds the parts of one split closure; default
	// DefaultMaxClosureParts.
	MaxParts int
	// SkipPaths leaves Member.Path nil: entries' narinfos are neither
	// checked nor kept (a catalog needs only hashes and manifests, and
	// saves a hash and about 1 KB of memory per path).
	SkipPaths bool
}

// ReadClosure resolves reference (a tag or digest) in t and reads the
// closure it names, of either format version, following an index to its
// parts. A store path's own manifest reads as a closure of one.
func ReadClosure(ctx context.Context, t backend.Target, reference string) (*Closure, error) {
	return ClosureReader{}.Read(ctx, t, reference)
}

// ParseClosure reads the closure whose top manifest or index (desc, data)
// was fetched from t by reference; parts are fetched from t.
func ParseClosure(ctx context.Context, t backend.Target, reference string, desc ocispec.Descriptor, data []byte) (*Closure, error) {
	return ClosureReader{}.Parse(ctx, t, reference, desc, data)
}

// Read resolves reference in t and reads the closure it names.
func (r ClosureReader) Read(ctx context.Context, t backend.Target, reference string) (*Closure, error) {
	desc, data, err := backend.FetchManifest(ctx, t, reference)
	if err != nil {
		return nil, err
	}
	return r.Parse(ctx, t, reference, desc, data)
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

// Parse reads the closure whose top manifest or index (desc, data) was
// fetched from t by reference; parts are fetched from t. Errors name the
// closure and wrap ErrNotClosure (not a closure at all: another tool's
// artifact), ErrNotArtifact (malformed), ErrClaimMismatch (an entry that
// is not what it says) or ErrTooLarge.
func (r ClosureReader) Parse(ctx context.Context, t backend.Target, reference string, desc ocispec.Descriptor, data []byte) (*Closure, error) {
	if r.MaxPaths <= 0 {
		r.MaxPaths = DefaultMaxClosurePaths
	}
	if r.MaxParts <= 0 {
		r.MaxParts = DefaultMaxClosureParts
	}
	var probe manifestProbe
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", reference, ErrNotClosure, err)
	}
	var c *Closure
	var err error
	switch probe.ArtifactType {
	case spec.ArtifactTypePath:
		// A single store path reads as a closure of one (without
		// nix-cache-info), so it can be inspected and pulled too.
		c, err = r.pathClosure(desc, data)
	case spec.ArtifactTypeClosure:
		c, err = r.readV1(ctx, t, desc, probe)
	case spec.ArtifactTypeClosureV2, spec.ArtifactTypeClosureFiles:
		c, err = r.readV2(ctx, t, desc, probe)
	default:
		return nil, fmt.Errorf("%s: artifactType %q is not a nixoci closure: %w", reference, probe.ArtifactType, ErrNotClosure)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", reference, err)
	}
	return c, nil
}

func (r ClosureReader) pathClosure(desc ocispec.Descriptor, data []byte) (*Closure, error) {
	art, err := ParsePathManifest(desc, data)
	if err != nil {
		return nil, err
	}
	m := Member{Hash: spec.PathTag(art.Info.StorePath), StorePath: art.Info.StorePath, Manifest: plainDescriptor(art.Manifest)}
	if !r.SkipPaths {
		m.Path = &art
	}
	return &Closure{Descriptor: desc, Version: spec.ClosureV1, Roots: []string{art.Info.StorePath}, PathCount: 1, Parts: 1,
		Layers: []ocispec.Descriptor{art.NAR, art.NarInfo}, Members: []Member{m}, Digests: []string{desc.Digest.String()}}, nil
}

// newClosure checks the annotations a closure of version has, and its
// bounds, before anything more is fetched.
func (r ClosureReader) newClosure(desc ocispec.Descriptor, probe manifestProbe, version string) (*Closure, error) {
	if v := probe.Annotations[spec.AnnotationVersion]; v != version {
		return nil, fmt.Errorf("%s has format version %q, want %q: %w", probe.ArtifactType, v, version, ErrNotArtifact)
	}
	c := &Closure{
		Descriptor: desc,
		Version:    version,
		Digests:    []string{desc.Digest.String()},
		Roots:      strings.Fields(probe.Annotations[spec.AnnotationRoots]),
		Parts:      1,
	}
	n, err := strconv.Atoi(probe.Annotations[spec.AnnotationPathCount])
	switch {
	case err != nil && version == spec.ClosureV2:
		return nil, fmt.Errorf("%s %q: %w", spec.AnnotationPathCount, probe.Annotations[spec.AnnotationPathCount], ErrNotArtifact)
	case n < 0:
		return nil, fmt.Errorf("%s %d: %w", spec.AnnotationPathCount, n, ErrNotArtifact)
	case n > r.MaxPaths:
		return nil, fmt.Errorf("says it holds %d store paths, over this reader's bound of %d: %w", n, r.MaxPaths, ErrTooLarge)
	}
	c.PathCount = n
	return c, nil
}

// checkParts refuses an index of more parts than the reader's bound,
// before any is fetched.
func (r ClosureReader) checkParts(parts []ocispec.Descriptor) error {
	if len(parts) > r.MaxParts {
		return fmt.Errorf("lists %d parts, over this reader's bound of %d: %w", len(parts), r.MaxParts, ErrTooLarge)
	}
	return nil
}

// isPartList: a version 2 index lists parts (its first entry says so).
func isPartList(ms []ocispec.Descriptor) bool {
	return len(ms) > 0 && ms[0].ArtifactType == spec.ArtifactTypeClosurePartV2
}

// counter counts the members of a closure as its parts are read, and
// refuses the closure as soon as they pass its bound.
type counter struct {
	max   int
	seen  map[string]bool
	count int
}

func (r ClosureReader) newCounter(c *Closure) *counter {
	limit := r.MaxPaths
	if c.PathCount > 0 {
		limit = min(limit, c.PathCount)
	}
	return &counter{max: limit, seen: map[string]bool{}}
}

// add counts m, refusing a closure that lists more paths than its bound
// or a store path twice.
func (n *counter) add(c *Closure, m Member) error {
	if n.seen[m.Hash] {
		return fmt.Errorf("lists the store path with hash part %s twice: %w", m.Hash, ErrNotArtifact)
	}
	n.count++
	if n.count > n.max {
		return fmt.Errorf("lists more than %d store paths (its %s says %d): %w", n.max, spec.AnnotationPathCount, c.PathCount, ErrTooLarge)
	}
	n.seen[m.Hash] = true
	c.Members = append(c.Members, m)
	return nil
}

func (r ClosureReader) readV1(ctx context.Context, t backend.Target, desc ocispec.Descriptor, probe manifestProbe) (*Closure, error) {
	c, err := r.newClosure(desc, probe, spec.ClosureV1)
	if err != nil {
		return nil, err
	}
	n := r.newCounter(c)
	if c.PathCount == 0 {
		n.max = r.MaxPaths // version 1 writers need not have said
	}
	addLayers := func(layers []ocispec.Descriptor) error {
		for _, l := range layers {
			if l.MediaType != spec.MediaTypeNarInfo {
				continue
			}
			h, ok := strings.CutSuffix(l.Annotations[spec.AnnotationTitle], ".narinfo")
			if !ok || !spec.IsHashPart(h) {
				return fmt.Errorf("narinfo layer %s is titled %q, not <hash part>.narinfo: %w", l.Digest, l.Annotations[spec.AnnotationTitle], ErrNotArtifact)
			}
			if err := n.add(c, Member{Hash: h}); err != nil {
				return err
			}
		}
		c.Layers = append(c.Layers, layers...)
		return nil
	}
	switch desc.MediaType {
	case ocispec.MediaTypeImageManifest:
		err = addLayers(probe.Layers)
	case ocispec.MediaTypeImageIndex:
		if err := r.checkParts(probe.Manifests); err != nil {
			return nil, err
		}
		c.Parts = len(probe.Manifests)
		for _, m := range probe.Manifests {
			part, err := fetchProbe(ctx, t, m, spec.ArtifactTypeClosurePart)
			if err != nil {
				return nil, fmt.Errorf("part %w", err)
			}
			if err := addLayers(part.Layers); err != nil {
				return nil, fmt.Errorf("part %s: %w", m.Digest, err)
			}
		}
	default:
		err = fmt.Errorf("unexpected media type %q: %w", desc.MediaType, ErrNotArtifact)
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (r ClosureReader) readV2(ctx context.Context, t backend.Target, desc ocispec.Descriptor, probe manifestProbe) (*Closure, error) {
	c, err := r.newClosure(desc, probe, spec.ClosureV2)
	if err != nil {
		return nil, err
	}
	if desc.MediaType != ocispec.MediaTypeImageIndex {
		return nil, fmt.Errorf("a version 2 closure is an image index, not %q: %w", desc.MediaType, ErrNotArtifact)
	}
	n := r.newCounter(c)
	addEntries := func(entries []ocispec.Descriptor) error {
		for _, e := range entries {
			switch e.ArtifactType {
			case spec.ArtifactTypePath:
				m, err := r.member(e)
				if err != nil {
					return err
				}
				if err := n.add(c, m); err != nil {
					return err
				}
			case spec.ArtifactTypeCacheInfo:
				if c.CacheInfoManifest.Digest != "" {
					return fmt.Errorf("lists a second nix-cache-info manifest %s: %w", e.Digest, ErrNotArtifact)
				}
				c.CacheInfoManifest = e
			case spec.ArtifactTypeLog, spec.ArtifactTypeRealisation, spec.ArtifactTypeListing, spec.ArtifactTypeDebugInfo:
				if probe.ArtifactType != spec.ArtifactTypeClosureFiles {
					return fmt.Errorf("entry %s is a %s, which a %s does not list: %w", e.Digest, e.ArtifactType, probe.ArtifactType, ErrNotArtifact)
				}
				if e.MediaType != ocispec.MediaTypeImageManifest || e.Digest.Validate() != nil {
					return fmt.Errorf("file entry %s: media type %q: %w", e.Digest, e.MediaType, ErrNotArtifact)
				}
				if len(c.Files) >= r.MaxPaths*maxFilesPerPath {
					return fmt.Errorf("lists more than %d files: %w", r.MaxPaths*maxFilesPerPath, ErrTooLarge)
				}
				c.Files = append(c.Files, e)
			default:
				return fmt.Errorf("entry %s has artifactType %q: %w", e.Digest, e.ArtifactType, ErrNotArtifact)
			}
		}
		return nil
	}
	if isPartList(probe.Manifests) {
		if err := r.checkParts(probe.Manifests); err != nil {
			return nil, err
		}
		c.Parts = len(probe.Manifests)
		for _, m := range probe.Manifests {
			part, err := fetchProbe(ctx, t, m, spec.ArtifactTypeClosurePartV2)
			if err != nil {
				return nil, fmt.Errorf("part %w", err)
			}
			if err := addEntries(part.Manifests); err != nil {
				return nil, fmt.Errorf("part %s: %w", m.Digest, err)
			}
		}
	} else if err := addEntries(probe.Manifests); err != nil {
		return nil, err
	}
	if c.CacheInfoManifest.Digest == "" {
		return nil, fmt.Errorf("no nix-cache-info manifest: %w", ErrNotArtifact)
	}
	if len(c.Members) != c.PathCount {
		return nil, fmt.Errorf("lists %d path manifests, its annotation says %d: %w", len(c.Members), c.PathCount, ErrNotArtifact)
	}
	if err := checkFileEntries(c, probe.ArtifactType); err != nil {
		return nil, err
	}
	return c, nil
}

// maxFilesPerPath bounds the file entries of a closure per store path it
// lists: a path has a listing, a realisation per output and key, a log,
// and debug-info entries, a few of each.
const maxFilesPerPath = 16

// checkFileEntries checks that every file entry of c belongs to one of
// its members, and that a closure-files index lists some.
func checkFileEntries(c *Closure, artifactType string) error {
	if len(c.Files) == 0 {
		if artifactType == spec.ArtifactTypeClosureFiles {
			return fmt.Errorf("a %s listing no file: %w", artifactType, ErrNotArtifact)
		}
		return nil
	}
	members := make(map[string]bool, len(c.Members))
	for _, m := range c.Members {
		members[m.StorePath] = true
	}
	for _, f := range c.Files {
		if sp := f.Annotations[spec.AnnotationStorePath]; !members[sp] {
			return fmt.Errorf("%s %s belongs to %q, which the closure does not list: %w", f.ArtifactType, f.Digest, sp, ErrNotArtifact)
		}
	}
	return nil
}

// member reads a version 2 entry: the store path it names (its hash part
// is the member's), its manifest, and, unless skipped, the path verified
// from its narinfo.
func (r ClosureReader) member(e ocispec.Descriptor) (Member, error) {
	sp := e.Annotations[spec.AnnotationStorePath]
	if err := narinfo.CheckStorePath(sp); err != nil {
		return Member{}, fmt.Errorf("path manifest %s: %w: %w", e.Digest, ErrNotArtifact, err)
	}
	if e.MediaType != ocispec.MediaTypeImageManifest || e.Digest.Validate() != nil {
		return Member{}, fmt.Errorf("path manifest %s of %s: media type %q: %w", e.Digest, sp, e.MediaType, ErrNotArtifact)
	}
	m := Member{Hash: spec.PathTag(sp), StorePath: sp, Manifest: plainDescriptor(e)}
	if !r.SkipPaths {
		if art, ok := PathFromEntry(e); ok {
			m.Path = &art
		}
	}
	return m, nil
}

// plainDescriptor is d without annotations.
func plainDescriptor(d ocispec.Descriptor) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: d.MediaType, ArtifactType: d.ArtifactType, Digest: d.Digest, Size: d.Size}
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
		return p, fmt.Errorf("%s: %w: %w", desc.Digest, ErrNotArtifact, err)
	}
	if p.ArtifactType != artifactType {
		return p, fmt.Errorf("%s has artifactType %q, want %q: %w", desc.Digest, p.ArtifactType, artifactType, ErrNotArtifact)
	}
	return p, nil
}

// ClosurePaths reads the artifact of every store path of c from t, each
// checked against what the closure claims of it (Member.Claim): from the
// entry itself when it carries the path (version 2), else by manifest
// digest (version 2, so a closure copied by its tag alone reads where it
// was copied to) or by tag (version 1), at most jobs at a time.
func ClosurePaths(ctx context.Context, t backend.Target, c *Closure, jobs int) ([]PathArtifact, error) {
	paths := make([]PathArtifact, len(c.Members))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(jobs, 1))
	for i, m := range c.Members {
		if m.Path != nil {
			paths[i] = *m.Path
			continue
		}
		g.Go(func() (err error) {
			paths[i], err = ResolvePath(gctx, t, m.Claim())
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
	if c.Version != spec.ClosureV2 {
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
