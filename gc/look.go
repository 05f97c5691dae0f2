package gc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// look is what one reading of a repository's tags found: tags nixoci
// gives its own artifacts by name (store paths, layers, referrers
// indexes; spec.ClassifyTag), and every other tag with what it names.
type look struct {
	at        time.Time
	pathTags  map[string]bool // hash parts
	layerTags map[string]bool
	refTags   map[digest.Digest]string // subject -> "sha256-<hex>"
	fileTags  map[string]bool          // logs, realisations, listings, debug-info entries
	named     map[string]ocispec.Descriptor
}

func newLook() *look {
	return &look{at: time.Now(), pathTags: map[string]bool{}, layerTags: map[string]bool{},
		refTags: map[digest.Digest]string{}, fileTags: map[string]bool{}, named: map[string]ocispec.Descriptor{}}
}

// add classifies tag by its name, reporting whether it is a named tag
// (a closure, image or anything else, to be resolved).
func (lk *look) add(tag string) bool {
	switch spec.ClassifyTag(tag) {
	case spec.TagGC:
		// the collector's own: neither a root nor garbage
	case spec.TagNamed, spec.TagCompose:
		return true
	case spec.TagPath:
		lk.pathTags[tag] = true
	case spec.TagReferrers:
		lk.refTags[digest.NewDigestFromEncoded(digest.SHA256, strings.TrimPrefix(tag, "sha256-"))] = tag
	case spec.TagLayer:
		lk.layerTags[tag] = true
	case spec.TagFile:
		lk.fileTags[tag] = true
	}
	return false
}

// lookAt lists t's tags page by page and resolves the named ones, jobs at
// a time. An image layout's index.json is read whole instead, so that
// its untagged entries count too.
func lookAt(ctx context.Context, t backend.Target, jobs int, p *Progress) (*look, error) {
	if l, ok := t.(*backend.Layout); ok {
		var lk *look
		err := l.Update(ctx, func(tx *backend.LayoutTx) error {
			lk = lookAtEntries(tx.Entries())
			return nil
		})
		if p != nil && lk != nil {
			p.Tags.Store(int64(len(lk.named) + len(lk.pathTags) + len(lk.layerTags) + len(lk.refTags)))
		}
		return lk, err
	}
	lk := newLook()
	var named []string
	n := 0
	if err := t.Tags(ctx, "", func(page []string) error {
		for _, tag := range page {
			if lk.add(tag) {
				named = append(named, tag)
			}
		}
		n += len(page)
		if p != nil {
			p.Tags.Store(int64(n))
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("listing tags: %w", err)
	}
	descs := make([]ocispec.Descriptor, len(named))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	for i, tag := range named {
		g.Go(func() error {
			d, err := t.Resolve(gctx, tag)
			if errors.Is(err, errdef.ErrNotFound) {
				return nil // deleted since listed
			}
			descs[i] = d
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for i, tag := range named {
		if descs[i].Digest != "" {
			lk.named[tag] = descs[i]
		}
	}
	return lk, nil
}

// lookAtEntries is lookAt for an image layout's index.json entries, read
// under its lock.
func lookAtEntries(entries []ocispec.Descriptor) *look {
	lk := newLook()
	for _, e := range entries {
		tag, ok := e.Annotations[ocispec.AnnotationRefName]
		if !ok {
			// An untagged entry (another tool's): kept, with what it reaches.
			lk.named["@"+e.Digest.String()] = e
			continue
		}
		if lk.add(tag) {
			lk.named[tag] = ocispec.Descriptor{MediaType: e.MediaType, ArtifactType: e.ArtifactType, Digest: e.Digest, Size: e.Size}
		}
	}
	return lk
}

// Node kinds: what a named tag (or a referrer) names.
type nodeKind int

const (
	nodeForeign   nodeKind = iota // anything not nixoci's: kept, with what it reaches
	nodeClosure                   // a closure of either version, or one store path
	nodeImage                     // an image made by nixoci (or an index of such)
	nodeTombstone                 // left by an interrupted untag
	nodeMarker                    // a gc marker under another tag
)

// ownManifest is a manifest of nixoci's a node reaches.
type ownManifest struct {
	kind      string
	desc      ocispec.Descriptor
	storePath string // KindPath
	subject   *ocispec.Descriptor
}

// node is what the collector knows of one manifest a root names.
type node struct {
	kind         nodeKind
	desc         ocispec.Descriptor
	artifactType string
	subject      *ocispec.Descriptor
	own          []ownManifest // for a closure: top, parts, cache-info, path manifests
	hashes       []string      // store paths reached, by hash part
	digests      []digest.Digest
	layers       []string // layer artifact tags reached
	blobs        []ocispec.Descriptor
}

// reader reads nodes, each digest once per collection.
type reader struct {
	t     backend.Target
	mu    sync.Mutex
	nodes map[digest.Digest]*node
}

func newReader(t backend.Target) *reader {
	return &reader{t: t, nodes: map[digest.Digest]*node{}}
}

// probe holds the fields of a manifest or index that tell what it is.
type probe struct {
	MediaType    string               `json:"mediaType"`
	ArtifactType string               `json:"artifactType"`
	Config       ocispec.Descriptor   `json:"config"`
	Layers       []ocispec.Descriptor `json:"layers"`
	Manifests    []ocispec.Descriptor `json:"manifests"`
	Subject      *ocispec.Descriptor  `json:"subject"`
	Annotations  map[string]string    `json:"annotations"`
}

// read reads what desc names. A manifest gone since it was listed is
// ErrNotFound.
func (r *reader) read(ctx context.Context, desc ocispec.Descriptor) (*node, error) {
	return r.readDepth(ctx, desc, 0)
}

func (r *reader) readDepth(ctx context.Context, desc ocispec.Descriptor, depth int) (*node, error) {
	r.mu.Lock()
	n, ok := r.nodes[desc.Digest]
	r.mu.Unlock()
	if ok {
		return n, nil
	}
	data, err := backend.FetchAll(ctx, r.t, desc, backend.MaxManifestRead)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", desc.Digest, err)
	}
	if n, err = r.parse(ctx, desc, data, depth); err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.nodes[desc.Digest] = n
	r.mu.Unlock()
	return n, nil
}

func (r *reader) parse(ctx context.Context, desc ocispec.Descriptor, data []byte, depth int) (*node, error) {
	var p probe
	if err := json.Unmarshal(data, &p); err != nil {
		// Not JSON we know: another tool's, kept.
		return &node{kind: nodeForeign, desc: desc}, nil
	}
	if desc.MediaType == "" {
		desc.MediaType = p.MediaType
	}
	n := &node{desc: desc, artifactType: p.ArtifactType, subject: p.Subject}
	switch p.ArtifactType {
	case spec.ArtifactTypePath, spec.ArtifactTypeClosure, spec.ArtifactTypeClosureV2, spec.ArtifactTypeClosureFiles:
		c, err := artifact.ClosureReader{SkipPaths: true}.Parse(ctx, r.t, desc.Digest.String(), desc, data)
		if errors.Is(err, artifact.ErrNotArtifact) {
			n.kind = nodeForeign
			return n, nil
		} else if err != nil {
			return nil, err
		}
		closureNode(n, c, p)
		return n, nil
	case spec.ArtifactTypeGCMarker:
		n.kind = nodeMarker
		if backend.IsTombstone(p.ArtifactType, p.Annotations) {
			n.kind = nodeTombstone
		}
		return n, nil
	}
	if desc.MediaType == ocispec.MediaTypeImageManifest {
		var m ocispec.Manifest
		if json.Unmarshal(data, &m) == nil && artifact.IsImage(m) {
			refs, err := artifact.ReadImageRefs(m)
			if err == nil {
				n.kind = nodeImage
				for _, sp := range refs.StorePaths {
					n.hashes = append(n.hashes, spec.PathTag(sp))
				}
				n.digests = refs.PathManifests
				n.layers = refs.LayerTags
			}
		}
		n.blobs = append([]ocispec.Descriptor{p.Config}, p.Layers...)
		return n, nil
	}
	if desc.MediaType == ocispec.MediaTypeImageIndex && depth < 4 {
		// An index reaches what its manifests reach; it is an image if
		// they all are.
		n.kind = nodeImage
		for _, m := range p.Manifests {
			if !backend.IsManifest(m.MediaType) {
				n.kind = nodeForeign
				continue
			}
			child, err := r.readDepth(ctx, m, depth+1)
			if errors.Is(err, errdef.ErrNotFound) {
				n.kind = nodeForeign
				continue
			} else if err != nil {
				return nil, err
			}
			if child.kind != nodeImage {
				n.kind = nodeForeign
			}
			n.digests = append(append(n.digests, m.Digest), child.digests...)
			n.hashes = append(n.hashes, child.hashes...)
			n.layers = append(n.layers, child.layers...)
			n.blobs = append(n.blobs, child.blobs...)
			for _, o := range child.own {
				n.digests = append(n.digests, o.desc.Digest)
			}
		}
		if len(p.Manifests) == 0 {
			n.kind = nodeForeign
		}
	}
	return n, nil
}

// closureNode fills n from the closure c read from it.
func closureNode(n *node, c *artifact.Closure, p probe) {
	n.kind = nodeClosure
	if p.ArtifactType == spec.ArtifactTypePath {
		n.hashes = []string{spec.PathTag(c.Roots[0])}
		n.own = []ownManifest{{kind: KindPath, desc: n.desc, storePath: c.Roots[0]}}
		n.blobs = c.Layers
		return
	}
	n.own = []ownManifest{{kind: KindClosure, desc: n.desc, subject: p.Subject}}
	if n.desc.MediaType == ocispec.MediaTypeImageIndex {
		for _, m := range p.Manifests {
			if m.ArtifactType == spec.ArtifactTypeClosurePart || m.ArtifactType == spec.ArtifactTypeClosurePartV2 {
				n.own = append(n.own, ownManifest{kind: KindPart, desc: plain(m)})
			}
		}
	}
	if c.Version == spec.ClosureV2 {
		n.own = append(n.own, ownManifest{kind: KindCacheInfo, desc: plain(c.CacheInfoManifest)})
		for _, m := range c.Members {
			n.hashes = append(n.hashes, m.Hash)
			n.own = append(n.own, ownManifest{kind: KindPath, desc: m.Manifest, storePath: m.StorePath})
		}
		closureFiles(n, c)
		return
	}
	for _, m := range c.Members {
		n.hashes = append(n.hashes, m.Hash)
	}
	n.blobs = c.Layers
}

// plain is d without annotations.
func plain(d ocispec.Descriptor) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: d.MediaType, ArtifactType: d.ArtifactType, Digest: d.Digest, Size: d.Size}
}

// readNamed reads what every named tag of lk names, jobs at a time; tags
// whose manifest vanished since the look are dropped from lk.
func (r *reader) readNamed(ctx context.Context, lk *look, jobs int, p *Progress) (map[string]*node, error) {
	tags := make([]string, 0, len(lk.named))
	for tag := range lk.named {
		tags = append(tags, tag)
	}
	nodes := make([]*node, len(tags))
	if p != nil {
		p.Roots.Store(int64(len(tags)))
		p.Read.Store(0)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	for i, tag := range tags {
		g.Go(func() error {
			n, err := r.read(gctx, lk.named[tag])
			if errors.Is(err, errdef.ErrNotFound) {
				return nil
			} else if err != nil {
				return fmt.Errorf("tag %s: %w", tag, err)
			}
			nodes[i] = n
			if p != nil {
				p.Read.Add(1)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := make(map[string]*node, len(tags))
	for i, tag := range tags {
		if nodes[i] == nil {
			delete(lk.named, tag)
			continue
		}
		out[tag] = nodes[i]
	}
	return out, nil
}
