package substituter

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/internal/serving"
	"github.com/nixoci/nixoci/spec"
)

// A path a client asked for that no backend had and an upstream did, and
// that no path found names, is a root: once its NAR is pulled (a client
// substitutes it: it asked for the NAR, or for NARs before, see
// narAhead), serve makes sure its whole closure is stored (pulling the NARs of the paths the
// client already had, within the blob cache's bounds) and then stores a
// closure artifact of it in the first backend, tagged
// spec.PulledClosureTag(root), with a push record (SPEC.md section
// 14.4). A later serve over that backend then learns the closure from its
// root in one request, as for a pushed closure, and `oras pull` of the
// tag gives the whole closure as a binary cache. A closure that cannot be completed within
// closureWait (a path failing to pull, or no room for it) is not stored;
// its paths stay stored by their tags.

const (
	// closureWait bounds how long a root's closure waits for its paths
	// to be stored.
	closureWait = 10 * time.Minute
	// maxPullClosures bounds the closures waiting at once.
	maxPullClosures = 256
)

// closure is a root's closure waiting for its paths to be stored.
type closure struct {
	root    *pathEntry
	arts    map[string]artifact.PathArtifact // hash part -> stored artifact
	missing int
	done    chan struct{} // closed when missing reaches 0
}

// closures tracks the roots asked for and their closures waiting.
type closures struct {
	p     *puller
	asked *serving.LRU[struct{}] // hash parts of roots asked for, not yet substituted
	// referenced holds the hash parts of the references of every path
	// found: a client asks for such a path because it read the narinfo
	// naming it (found first), so it is no root.
	referenced *serving.LRU[struct{}]
	mu         sync.Mutex
	waiting    map[string]*closure   // root hash -> its closure
	members    map[string][]*closure // hash of a path not stored yet -> closures waiting for it
}

func newClosures(p *puller) *closures {
	return &closures{
		p: p, asked: serving.NewLRU[struct{}](maxPullClosures * 4), referenced: serving.NewLRU[struct{}](p.s.opts.CacheSize),
		waiting: map[string]*closure{}, members: map[string][]*closure{},
	}
}

// found notes the references of e, a path just found.
func (c *closures) found(e *pathEntry) {
	self := spec.PathTag(e.Artifact.Info.StorePath)
	for _, r := range e.Artifact.Info.References {
		if h := spec.PathTag(r); h != self {
			c.referenced.Put(h, struct{}{}, c.p.s.opts.CacheTTL)
		}
	}
}

// rootAsked notes that a client asked for e, which no cache held: a root
// if it was found upstream and no path found names it.
func (c *closures) rootAsked(e *pathEntry) {
	if _, ok := e.NAR.(upstreamNAR); !ok {
		return
	}
	hash := spec.PathTag(e.Artifact.Info.StorePath)
	if _, ok := c.referenced.Get(hash); !ok {
		c.asked.Put(hash, struct{}{}, closureWait)
	}
}

// substituted notes that the NAR of loc was pulled for a client: if its
// path is a root asked for, its closure is completed and stored.
func (c *closures) substituted(loc upstreamNAR) {
	hash := spec.PathTag(loc.info.StorePath)
	if _, ok := c.asked.Get(hash); !ok {
		return
	}
	c.asked.Remove(hash)
	c.mu.Lock()
	_, busy := c.waiting[hash]
	full := len(c.waiting) >= maxPullClosures
	if !busy && !full {
		c.waiting[hash] = &closure{} // claimed; filled in by store
	}
	c.mu.Unlock()
	if busy || full {
		return
	}
	done := func() {
		c.mu.Lock()
		delete(c.waiting, hash)
		c.mu.Unlock()
	}
	if !c.p.background(func() {
		defer done()
		ctx, cancel := context.WithTimeout(c.p.ctx, closureWait)
		defer cancel()
		if err := c.store(ctx, hash); err != nil && c.p.ctx.Err() == nil {
			c.p.s.log.Warn("the closure of a path pulled through is not stored (its paths are, by their tags)", "path", loc.info.StorePath, "err", err)
		}
	}) {
		done()
	}
}

// store finds the closure of the root with hash part hash through the
// resolver, waits until the first backend holds each of its paths
// (pulling those no client asked for), and stores it.
func (c *closures) store(ctx context.Context, hash string) error {
	s := c.p.s
	began := time.Now()
	entries, err := c.walk(ctx, hash)
	if err != nil {
		return err
	}
	cl := &closure{root: entries[hash], arts: map[string]artifact.PathArtifact{}, done: make(chan struct{})}
	c.mu.Lock()
	c.waiting[hash] = cl
	for h, e := range entries {
		switch loc := e.NAR.(type) {
		case backendNAR:
			if loc.Backend != 0 {
				c.mu.Unlock()
				c.forget(cl)
				return fmt.Errorf("%s is held by %s, not by %s where the closure would be", e.Artifact.Info.StorePath, s.backends.List()[loc.Backend].Name, s.backends.List()[0].Name)
			}
			cl.arts[h] = e.Artifact
		case upstreamNAR:
			cl.missing++
			c.members[h] = append(c.members[h], cl)
		}
	}
	if cl.missing == 0 {
		close(cl.done)
	}
	c.mu.Unlock()
	// Stored meanwhile (before this closure was waiting for them)?
	for h, e := range entries {
		if loc, ok := e.NAR.(upstreamNAR); ok {
			if now, ok := s.resolver.cached(h); ok && now != nil {
				if b, ok := now.NAR.(backendNAR); ok && b.Backend == 0 {
					c.stored(h, now.Artifact)
					continue
				}
			}
			c.p.prefetch(loc) // a path the client had: pulled for the closure
		}
	}
	select {
	case <-cl.done:
	case <-ctx.Done():
		c.forget(cl)
		return fmt.Errorf("waiting for the paths of the closure of %s to be stored: %w", cl.root.Artifact.Info.StorePath, ctx.Err())
	}
	roots := []string{cl.root.Artifact.Info.StorePath}
	paths := make([]artifact.PathArtifact, 0, len(cl.arts))
	for _, a := range cl.arts {
		paths = append(paths, a)
	}
	tag := spec.PulledClosureTag(roots[0])
	dst := s.backends.List()[0].Target
	// With a push record, as a push records its closure (SPEC.md section
	// 10.1): retention by time (gc --match 'pulled.*' --keep-within D)
	// sees when. Guarded as a push is against a collection deleting the
	// paths found stored at the start.
	if _, err := artifact.StoreClosureGuarded(ctx, dst, began, artifact.GuardedClosure{
		Roots: roots, Paths: paths, Tag: tag, Record: artifact.RecordOptions{Tool: "nixoci serve --upstream"},
	}); err != nil {
		return err
	}
	c.p.closuresStored.Inc()
	s.log.Debug("stored the closure of a path pulled through", "root", roots[0], "paths", len(paths), "tag", tag)
	return nil
}

// walk finds the closure of the path with hash part hash through the
// resolver (whose cache the prefetcher filled, mostly), at most maxWalk
// paths.
func (c *closures) walk(ctx context.Context, hash string) (map[string]*pathEntry, error) {
	entries := map[string]*pathEntry{}
	level := []string{hash}
	for len(level) > 0 {
		var next []string
		for _, h := range level {
			if _, seen := entries[h]; seen {
				continue
			}
			if len(entries) >= maxWalk {
				return nil, fmt.Errorf("closure of more than %d paths", maxWalk)
			}
			e, err := c.p.s.lookup(ctx, h)
			if err != nil {
				return nil, err
			}
			if e == nil {
				return nil, fmt.Errorf("%s: %w", h, errNotFound)
			}
			entries[h] = e
			for _, r := range e.Artifact.Info.References {
				next = append(next, spec.PathTag(r))
			}
		}
		level = next
	}
	return entries, nil
}

// stored notes that the first backend holds the path art with hash part
// hash, for the closures waiting for it.
func (c *closures) stored(hash string, art artifact.PathArtifact) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cl := range c.members[hash] {
		if _, ok := cl.arts[hash]; ok {
			continue
		}
		cl.arts[hash] = art
		if cl.missing--; cl.missing == 0 {
			close(cl.done)
		}
	}
	delete(c.members, hash)
}

// forget stops cl waiting.
func (c *closures) forget(cl *closure) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for h, list := range c.members {
		for i, x := range list {
			if x == cl {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(c.members, h)
		} else {
			c.members[h] = list
		}
	}
}
