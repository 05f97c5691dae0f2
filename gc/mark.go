package gc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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

// marking is what one mark found.
type marking struct {
	look    *look
	nodes   map[string]*node // named tag -> what it names
	reach   *reach
	dropped map[string]digest.Digest // closure tags retention dropped
	kept    []TagTime
	drop    []TagTime
	items   []Item // the garbage, in deletion order
	bytes   int64  // registries: bytes of the items' manifests and of blobs only they name
	roots   struct{ closures, images, others int }
	// done is when the mark ended: the time what it found unreachable
	// was seen so.
	done time.Time
}

// marker is the state a collection keeps across its marks and looks.
type marker struct {
	t      backend.Target
	opts   Options
	reader *reader
	// tagged caches what a path or layer tag named when first read; a
	// tag that names something else later is left for the next
	// collection (deleting the old digest is harmless either way).
	mu     sync.Mutex
	tagged map[string]*Item                  // tag -> item, nil if not garbage
	files  map[string]*artifact.FileArtifact // file tag -> what it named when first read, nil if not a file artifact (gc/files.go)
}

func newMarker(t backend.Target, opts Options) *marker {
	return &marker{t: t, opts: opts, reader: newReader(t), tagged: map[string]*Item{}, files: map[string]*artifact.FileArtifact{}}
}

// mark looks at the repository and finds its garbage.
func (m *marker) mark(ctx context.Context) (*marking, error) {
	p := m.opts.Progress
	p.setPhase("marking")
	lk, err := lookAt(ctx, m.t, m.opts.Jobs, p)
	if err != nil {
		return nil, err
	}
	mk := &marking{look: lk, dropped: map[string]digest.Digest{}}
	if mk.nodes, err = m.reader.readNamed(ctx, lk, m.opts.Jobs, p); err != nil {
		return nil, err
	}
	refs, err := m.referrers(ctx, lk, mk.nodes)
	if err != nil {
		return nil, err
	}
	if r := m.opts.Retention; r != nil {
		closures := map[string]digest.Digest{}
		for tag, n := range mk.nodes {
			if n.kind == nodeClosure {
				closures[tag] = n.desc.Digest
			}
		}
		mk.kept, mk.drop = r.decide(closures, func(d digest.Digest) time.Time { return newestRecord(refs[d]).Pushed }, time.Now())
		for _, tt := range mk.drop {
			mk.dropped[tt.Tag] = tt.Digest
		}
	}
	mk.reach = rootsReach(mk.nodes, mk.dropped, &mk.roots)
	g := &garbage{seen: map[string]bool{}, index: map[string]int{}}
	if err := m.markFiles(ctx, mk, g); err != nil {
		return nil, err
	}
	m.markDropped(mk, g)
	if err := m.markReferrers(ctx, mk, refs, g); err != nil {
		return nil, err
	}
	if err := m.markTagged(ctx, mk, g); err != nil {
		return nil, err
	}
	mk.items, mk.bytes = g.sorted(mk.reach)
	mk.done = time.Now()
	if p != nil {
		p.Garbage.Store(int64(len(mk.items)))
	}
	return mk, nil
}

// rootsReach is what the named tags reach, but for the dropped ones that
// still name what they named when dropped; it counts the roots.
func rootsReach(nodes map[string]*node, dropped map[string]digest.Digest, count *struct{ closures, images, others int }) *reach {
	rc := newReach()
	for tag, n := range nodes {
		if d, ok := dropped[tag]; ok && d == n.desc.Digest {
			continue
		}
		switch n.kind {
		case nodeTombstone:
			continue
		case nodeClosure:
			count.closures++
		case nodeImage:
			count.images++
		default:
			count.others++
		}
		rc.add(n)
	}
	return rc
}

// garbage collects items, once each.
type garbage struct {
	mu    sync.Mutex
	items []Item
	seen  map[string]bool
	index map[string]int
}

// add adds it, or merges it into the item of the same kind and digest
// found before (another of its tags, its blobs).
func (g *garbage) add(it Item) {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := it.key()
	if !g.seen[k] {
		g.seen[k] = true
		g.index[k] = len(g.items)
		g.items = append(g.items, it)
		return
	}
	old := &g.items[g.index[k]]
	for _, t := range it.Tags {
		if !slices.Contains(old.Tags, t) {
			old.Tags = append(old.Tags, t)
		}
	}
	if old.needsBlobs && !it.needsBlobs {
		old.blobs, old.Size, old.needsBlobs = it.blobs, it.Size, false
	}
	if old.StorePath == "" {
		old.StorePath = it.StorePath
	}
}

// order is the deletion order of kinds (SPEC.md 10.2): what a tag names
// first, so that no tag ever names something half deleted.
var order = map[string]int{
	KindClosureTag: 0, KindClosure: 0, KindTombstone: 0,
	KindRecord: 1, KindPart: 2, KindCacheInfo: 2, KindOther: 2, KindFile: 2,
	KindPath: 3, KindLayer: 3, KindReferrers: 4, KindMarker: 4,
}

// sorted returns the items in deletion order and the bytes they hold
// that nothing reached names.
func (g *garbage) sorted(rc *reach) ([]Item, int64) {
	items := slices.Clone(g.items)
	slices.SortStableFunc(items, func(a, b Item) int {
		if c := order[a.Kind] - order[b.Kind]; c != 0 {
			return c
		}
		return strings.Compare(a.StorePath+a.Digest.String(), b.StorePath+b.Digest.String())
	})
	return items, itemBytes(items, rc)
}

// itemBytes is the size of the items' manifests and of the blobs they
// name that nothing rc reaches names, each counted once.
func itemBytes(items []Item, rc *reach) int64 {
	counted := map[digest.Digest]bool{}
	var bytes int64
	for _, it := range items {
		if !counted[it.Digest] && it.Kind != KindClosureTag {
			counted[it.Digest] = true
			bytes += it.manifestSize
		}
		for _, b := range it.blobs {
			if !counted[b.Digest] && !rc.digests[b.Digest] {
				counted[b.Digest] = true
				bytes += b.Size
			}
		}
	}
	return bytes
}

// markDropped adds the closure tags retention dropped: the tag alone if
// another root still reaches what it names, else the closure's own
// manifests.
func (m *marker) markDropped(mk *marking, g *garbage) {
	byDigest := map[digest.Digest][]string{}
	for tag, d := range mk.dropped {
		byDigest[d] = append(byDigest[d], tag)
	}
	for d, tags := range byDigest {
		slices.Sort(tags)
		n := m.reader.nodes[d]
		if mk.reach.digests[d] {
			for _, tag := range tags {
				g.add(Item{Kind: KindClosureTag, Digest: d, Tags: []string{tag}, mediaType: n.desc.MediaType})
			}
			continue
		}
		m.closureGarbage(mk, g, n, tags)
	}
}

// closureGarbage adds what only the unreached closure n holds: its top
// (with tags), parts and cache-info manifest, and the path manifests no
// root reaches (their tags, if any, are found with the path tags).
func (m *marker) closureGarbage(mk *marking, g *garbage, n *node, tags []string) {
	for i, o := range n.own {
		if mk.reach.digests[o.desc.Digest] || o.kind == KindPath && mk.reach.hashes[pathHash(o.storePath)] {
			continue
		}
		it := Item{Kind: o.kind, Digest: o.desc.Digest, StorePath: o.storePath, mediaType: o.desc.MediaType,
			subject: o.subject, manifestSize: o.desc.Size, Size: o.desc.Size}
		if i == 0 {
			it.Tags = tags
			it.blobs = n.blobs
			for _, b := range n.blobs {
				it.Size += b.Size
			}
		}
		// A path manifest with a tag is read by markTagged (and merged
		// here if the tag names it); an untagged one is read for its blobs.
		it.needsBlobs = o.kind == KindPath && !mk.look.pathTags[pathHash(o.storePath)]
		g.add(it)
	}
}

// referrers reads the referrers lists of the repository: every
// referrers index tag, and the referrers of each closure that has none
// (a registry with the referrers API), by subject.
func (m *marker) referrers(ctx context.Context, lk *look, nodes map[string]*node) (map[digest.Digest][]ocispec.Descriptor, error) {
	type job struct {
		subject ocispec.Descriptor
		tag     string
	}
	var jobs []job
	for s, tag := range lk.refTags {
		jobs = append(jobs, job{ocispec.Descriptor{Digest: s}, tag})
	}
	if _, isLayout := m.t.(*backend.Layout); !isLayout {
		seen := map[digest.Digest]bool{}
		for _, n := range nodes {
			if d := n.desc.Digest; n.kind == nodeClosure && lk.refTags[d] == "" && !seen[d] {
				seen[d] = true
				jobs = append(jobs, job{n.desc, ""})
			}
		}
	}
	out := make([][]ocispec.Descriptor, len(jobs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(m.opts.Jobs)
	for i, j := range jobs {
		g.Go(func() error {
			var err error
			if j.tag != "" {
				out[i], err = backend.ReadReferrersIndex(gctx, m.t, j.tag)
			} else {
				err = m.t.Referrers(gctx, j.subject, "", func(refs []ocispec.Descriptor) error {
					out[i] = append(out[i], refs...)
					return nil
				})
			}
			if errors.Is(err, errdef.ErrNotFound) {
				return nil
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	refs := map[digest.Digest][]ocispec.Descriptor{}
	for i, j := range jobs {
		refs[j.subject.Digest] = append(refs[j.subject.Digest], out[i]...)
	}
	return refs, nil
}

// newestRecord is the newest push record among refs (zero if none).
func newestRecord(refs []ocispec.Descriptor) artifact.PushRecord {
	var newest artifact.PushRecord
	for _, d := range refs {
		if r, ok := artifact.ParsePushRecord(d); ok && r.Pushed.After(newest.Pushed) {
			newest = r
		}
	}
	return newest
}

// isOurs reports whether artifactType is one nixoci writes.
func isOurs(artifactType string) bool {
	return strings.HasPrefix(artifactType, "application/vnd.nixoci.")
}

// markReferrers adds push records no kept closure needs, closures found
// only as referrers of their root (untagged, or copied without tags)
// that no root reaches, and referrers indexes left listing only garbage.
func (m *marker) markReferrers(ctx context.Context, mk *marking, refs map[digest.Digest][]ocispec.Descriptor, g *garbage) error {
	// Keep the newest record of every reached closure.
	for s, list := range refs {
		if mk.reach.digests[s] {
			if r := newestRecord(list); r.Descriptor.Digest != "" {
				mk.reach.digests[r.Descriptor.Digest] = true
			}
		}
	}
	var unreached []ocispec.Descriptor
	for s, list := range refs {
		subject := &ocispec.Descriptor{Digest: s}
		allGarbage := true
		for _, d := range list {
			switch {
			case mk.reach.digests[d.Digest] || !isOurs(d.ArtifactType):
				allGarbage = false
			case d.ArtifactType == spec.ArtifactTypePushRecord:
				g.add(Item{Kind: KindRecord, Digest: d.Digest, mediaType: d.MediaType, subject: subject,
					manifestSize: d.Size, Size: d.Size, orphanRecord: !mk.reach.digests[s]})
			case spec.IsClosureIndexType(d.ArtifactType):
				unreached = append(unreached, plain(d))
			default:
				g.add(Item{Kind: KindOther, Digest: d.Digest, mediaType: d.MediaType, subject: subject, manifestSize: d.Size, Size: d.Size})
			}
		}
		if tag := mk.look.refTags[s]; tag != "" && allGarbage && !mk.reach.digests[s] {
			if desc, err := m.t.Resolve(ctx, tag); err == nil {
				g.add(Item{Kind: KindReferrers, Digest: desc.Digest, Tags: []string{tag}, mediaType: desc.MediaType,
					manifestSize: desc.Size, Size: desc.Size, subject: subject})
			} else if !errors.Is(err, errdef.ErrNotFound) {
				return err
			}
		}
	}
	for _, d := range unreached {
		n, err := m.reader.read(ctx, d)
		if errors.Is(err, errdef.ErrNotFound) {
			continue
		} else if err != nil {
			return fmt.Errorf("closure %s (a referrer): %w", d.Digest, err)
		}
		if n.kind != nodeClosure {
			continue
		}
		m.closureGarbage(mk, g, n, nil)
	}
	return m.fillBlobs(ctx, g)
}

// fillBlobs reads the path manifests found without a tag, for the blobs
// they name.
func (m *marker) fillBlobs(ctx context.Context, g *garbage) error {
	eg, gctx := errgroup.WithContext(ctx)
	eg.SetLimit(m.opts.Jobs)
	for i := range g.items {
		if !g.items[i].needsBlobs {
			continue
		}
		eg.Go(func() error {
			it := &g.items[i]
			art, err := artifact.FetchPathManifest(gctx, m.t, it.descriptor())
			if errors.Is(err, errdef.ErrNotFound) {
				return nil
			} else if err != nil {
				return err
			}
			it.blobs = []ocispec.Descriptor{art.NAR, art.NarInfo}
			it.Size = art.Manifest.Size + art.NAR.Size + art.NarInfo.Size
			return nil
		})
	}
	return eg.Wait()
}

// markTagged adds path and layer tags no root reaches, and tombstones.
// Each such tag's manifest is read once per collection to check that it
// is what its tag says.
func (m *marker) markTagged(ctx context.Context, mk *marking, g *garbage) error {
	var tags []string
	for h := range mk.look.pathTags {
		if !mk.reach.hashes[h] {
			tags = append(tags, h)
		}
	}
	for l := range mk.look.layerTags {
		if !mk.reach.layers[l] {
			tags = append(tags, l)
		}
	}
	for tag, n := range mk.nodes {
		if n.kind == nodeTombstone {
			g.add(Item{Kind: KindTombstone, Digest: n.desc.Digest, Tags: []string{tag}, mediaType: n.desc.MediaType,
				manifestSize: n.desc.Size, Size: n.desc.Size})
		}
	}
	eg, gctx := errgroup.WithContext(ctx)
	eg.SetLimit(m.opts.Jobs)
	for _, tag := range tags {
		eg.Go(func() error {
			it, err := m.taggedItem(gctx, tag)
			if err != nil || it == nil || mk.reach.digests[it.Digest] {
				return err
			}
			g.add(*it)
			return nil
		})
	}
	return eg.Wait()
}

// taggedItem reads what a path or layer tag names: an item if it is a
// path or layer artifact that its tag fits, else nil (left alone).
func (m *marker) taggedItem(ctx context.Context, tag string) (*Item, error) {
	m.mu.Lock()
	it, ok := m.tagged[tag]
	m.mu.Unlock()
	if ok {
		return it, nil
	}
	desc, data, err := backend.FetchManifest(ctx, m.t, tag)
	if errors.Is(err, errdef.ErrNotFound) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("tag %s: %w", tag, err)
	}
	if len(tag) == 32 {
		art, err := artifact.ParsePathManifest(desc, data)
		if err == nil && spec.PathTag(art.Info.StorePath) == tag {
			it = &Item{Kind: KindPath, Digest: desc.Digest, Tags: []string{tag}, StorePath: art.Info.StorePath,
				Size: desc.Size + art.NAR.Size + art.NarInfo.Size, mediaType: desc.MediaType, manifestSize: desc.Size,
				blobs: []ocispec.Descriptor{art.NAR, art.NarInfo}}
		}
	} else {
		var mf ocispec.Manifest
		if json.Unmarshal(data, &mf) == nil && mf.ArtifactType == spec.ArtifactTypeLayer && len(mf.Layers) == 1 {
			it = &Item{Kind: KindLayer, Digest: desc.Digest, Tags: []string{tag}, StorePath: mf.Annotations[spec.AnnotationStorePath],
				Size: desc.Size + mf.Layers[0].Size, mediaType: desc.MediaType, manifestSize: desc.Size, blobs: mf.Layers}
		}
	}
	m.mu.Lock()
	m.tagged[tag] = it
	m.mu.Unlock()
	return it, nil
}
