package substituter

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/catalog"
	"github.com/nixoci/nixoci/internal/serving"
	"github.com/nixoci/nixoci/spec"
)

// Nix asks for narinfos about one at a time, so with a registry far away
// every cold lookup costs a round trip on Nix's critical path. Serve
// knows more than Nix: a closure lists its paths, a narinfo its
// references. When Nix asks for a path serve had not seen, serve learns
// what comes next and fetches it ahead, within its own bound on
// concurrent requests, into the narinfo cache Nix's later requests read:
//
//   - a path that roots a stored closure (the catalog knows it, or the
//     closure is a referrer of its manifest, SPEC.md 5.3): the closure's
//     paths, from the narinfos its index carries (format 2) or by
//     their tags (format 1);
//   - a path of a closure prefetched already: nothing;
//   - any other path: its references, then theirs, once each, once the
//     closure searches under way when Nix asked have ended (the path is
//     likely one of theirs).
//
// Each path is fetched at most once per cache lifetime, whether Nix or
// the prefetcher asks first (they share the lookup), so the requests for
// one closure stay within its size plus the few that find the closure.
// A failure only leaves the path to be fetched when Nix asks; it is never
// remembered as "not found".

// prefetcher runs the fetches ahead of Nix.
type prefetcher struct {
	s        *Server
	sem      chan struct{}
	mu       sync.Mutex
	closures *serving.LRU[struct{}] // digests of the closures prefetched, for the cache lifetime
	// covered holds the paths of the closures prefetched, for the cache
	// lifetime: Nix's lookups of them need no search of their own.
	covered *serving.LRU[struct{}]
	// finding holds a channel per closure search in flight, closed when
	// it ends. A lookup that starts meanwhile waits for them first: the
	// path is most likely one of the closure's, and searching for it
	// too would race the closure's index with requests one path at a
	// time (one for its referrers, one per reference).
	finding map[chan struct{}]struct{}
	paths   *prometheus.CounterVec
	found   *prometheus.CounterVec
}

// Bounds of prefetcher.covered (about 120 bytes a path, 24 MB) and
// prefetcher.closures.
const (
	maxCovered  = 200_000
	maxClosures = 10_000
)

// maxSearchWait bounds how long a lookup waits for the closure searches
// started before it; after that it searches by itself.
const maxSearchWait = 10 * time.Second

func newPrefetcher(s *Server, jobs int) *prefetcher {
	p := &prefetcher{
		s:        s,
		sem:      make(chan struct{}, jobs),
		closures: serving.NewLRU[struct{}](maxClosures),
		covered:  serving.NewLRU[struct{}](maxCovered),
		finding:  map[chan struct{}]struct{}{},
		paths: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixoci_prefetched_narinfos_total",
			Help: "Narinfos fetched ahead of Nix, by how the path was known (closure or references) and outcome.",
		}, []string{"via", "outcome"}),
		found: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixoci_prefetch_closures_total",
			Help: "Closures learned from a root Nix asked for, by where they were found (catalog or referrers).",
		}, []string{"source"}),
	}
	return p
}

func (p *prefetcher) collectors() []prometheus.Collector {
	return []prometheus.Collector{p.paths, p.found}
}

// after starts fetching what is likely to be asked after e, which Nix
// just asked for and serve had not cached.
func (p *prefetcher) after(e *pathEntry, hash string) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if p.isCovered(hash) {
			return
		}
		p.waitForSearches(ctx)
		if p.isCovered(hash) {
			return
		}
		done := p.searching()
		cl, a, ok := p.closureOf(ctx, e, hash)
		done()
		if ok {
			if cl != nil {
				p.members(ctx, e.backend, p.fromIndex(ctx, e.backend, a, nextFirst(cl.Members, e)))
			}
			return
		}
		p.references(ctx, e)
	}()
}

func (p *prefetcher) isCovered(hash string) bool {
	_, ok := p.covered.Get(hash)
	return ok
}

// searching records a closure search in flight until done is called.
func (p *prefetcher) searching() (done func()) {
	ch := make(chan struct{})
	p.mu.Lock()
	p.finding[ch] = struct{}{}
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		delete(p.finding, ch)
		p.mu.Unlock()
		close(ch)
	}
}

// waitForSearches waits until the closure searches in flight now have
// ended, or maxSearchWait.
func (p *prefetcher) waitForSearches(ctx context.Context) {
	p.mu.Lock()
	chans := make([]chan struct{}, 0, len(p.finding))
	for ch := range p.finding {
		chans = append(chans, ch)
	}
	p.mu.Unlock()
	timeout := time.NewTimer(maxSearchWait)
	defer timeout.Stop()
	for _, ch := range chans {
		select {
		case <-ch:
		case <-timeout.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// closureOf finds the closure rooted at the path: from the catalog, else
// from the referrers of its manifest, recording what it finds and its
// paths as covered; a closure read from the referrers comes with its
// artifact (a), so that its index is not read twice. A closure
// prefetched a moment ago is not fetched again (ok, but cl nil).
func (p *prefetcher) closureOf(ctx context.Context, e *pathEntry, hash string) (cl *catalog.Closure, a *artifact.Closure, ok bool) {
	cat := p.s.catalogs[e.backend]
	cl, ok = cat.ClosureOf(hash)
	source := "catalog"
	if !ok {
		var err error
		if cl, a, err = p.fromReferrers(ctx, e); err != nil {
			p.s.log.Debug("prefetch: no closure from referrers", "path", e.art.Info.StorePath, "err", err)
		}
		ok, source = cl != nil, "referrers"
	}
	if !ok {
		return nil, nil, false
	}
	key := cl.Descriptor.Digest.String()
	for _, m := range cl.Members {
		p.covered.Put(m.Hash, struct{}{}, p.s.opts.CacheTTL)
	}
	p.mu.Lock() // one prefetch of a closure found by several lookups at once
	_, seen := p.closures.Get(key)
	if !seen {
		p.closures.Put(key, struct{}{}, p.s.opts.CacheTTL)
	}
	p.mu.Unlock()
	if seen {
		return nil, nil, true // fetched already; nothing more to learn
	}
	p.found.WithLabelValues(source).Inc()
	return cl, a, true
}

// fromReferrers reads the smallest version 2 closure (with files or
// not) whose subject is the
// path's manifest and adds it to the catalog.
func (p *prefetcher) fromReferrers(ctx context.Context, e *pathEntry) (*catalog.Closure, *artifact.Closure, error) {
	t := p.s.backends.List()[e.backend].Target
	var best ocispec.Descriptor
	bestCount := -1
	release, err := p.acquire(ctx)
	if err != nil {
		return nil, nil, err
	}
	// Every artifact type: closures with files (SPEC.md section 12.6)
	// have one of their own.
	err = t.Referrers(ctx, e.art.Manifest, "", func(refs []ocispec.Descriptor) error {
		for _, r := range refs {
			if !spec.IsClosureIndexType(r.ArtifactType) {
				continue
			}
			n, err := strconv.Atoi(r.Annotations[spec.AnnotationPathCount])
			if err != nil {
				n = 1 << 30
			}
			if bestCount < 0 || n < bestCount {
				best, bestCount = r, n
			}
		}
		return nil
	})
	release()
	if err != nil || bestCount < 0 {
		return nil, nil, err
	}
	release, err = p.acquire(ctx)
	if err != nil {
		return nil, nil, err
	}
	a, err := artifact.ReadClosure(ctx, t, best.Digest.String())
	release()
	if err != nil {
		return nil, nil, err
	}
	p.s.catalogs[e.backend].Add(a)
	cl, _ := p.s.catalogs[e.backend].ClosureOf(spec.PathTag(e.art.Info.StorePath))
	if cl == nil {
		// The catalog is full: use what was read without keeping it.
		return catalog.FromArtifact(a), a, nil
	}
	return cl, a, nil
}

// nextFirst orders members so that e's references, which Nix asks for
// next, are fetched first.
func nextFirst(members []catalog.Member, e *pathEntry) []catalog.Member {
	refs := map[string]bool{}
	for _, r := range e.art.Info.References {
		refs[spec.PathTag(r)] = true
	}
	out := make([]catalog.Member, 0, len(members))
	for _, m := range members {
		if refs[m.Hash] {
			out = append(out, m)
		}
	}
	for _, m := range members {
		if !refs[m.Hash] {
			out = append(out, m)
		}
	}
	return out
}

// fromIndex caches the paths a version 2 closure index describes whole:
// its entries carry each path's narinfo, checked against the manifest
// digest (artifact.PathFromEntry), so the closure is learned with the one
// request that reads its index (and one per part), none if a is the
// closure read already. It returns the members still to fetch: those of
// a version 1 closure, and entries that did not check out.
func (p *prefetcher) fromIndex(ctx context.Context, backendIndex int, a *artifact.Closure, members []catalog.Member) []catalog.Member {
	var closureDigest string
	for _, m := range members {
		if m.Closure != "" {
			closureDigest = m.Closure
			break
		}
	}
	if closureDigest == "" {
		return members
	}
	if a == nil || a.Descriptor.Digest.String() != closureDigest {
		release, err := p.acquire(ctx)
		if err != nil {
			return members
		}
		a, err = artifact.ReadClosure(ctx, p.s.backends.List()[backendIndex].Target, closureDigest)
		release()
		if err != nil {
			p.s.log.Debug("prefetch: cannot read the closure index; fetching its paths one by one", "closure", closureDigest, "err", err)
			return members
		}
	}
	learned := map[string]bool{}
	for _, d := range a.PathManifests {
		hash := spec.PathTag(d.Annotations[spec.AnnotationStorePath])
		if _, ok := p.s.narinfos.Get(hash); ok {
			learned[hash] = true
			continue
		}
		art, ok := artifact.PathFromEntry(d)
		if !ok {
			continue
		}
		_, _, err := p.s.fetchShared(ctx, hash, func(context.Context) (*pathEntry, error) { return p.s.newEntry(art, backendIndex) })
		p.count("closure", err)
		learned[hash] = err == nil
	}
	var rest []catalog.Member
	for _, m := range members {
		if !learned[m.Hash] {
			rest = append(rest, m)
		}
	}
	return rest
}

// members fetches the closure's paths Nix has not been answered yet.
func (p *prefetcher) members(ctx context.Context, backendIndex int, members []catalog.Member) {
	var wg sync.WaitGroup
	for _, m := range members {
		if _, ok := p.s.narinfos.Get(m.Hash); ok {
			continue
		}
		release, err := p.acquire(ctx)
		if err != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer release()
			_, _, err := p.s.fetchShared(ctx, m.Hash, func(ctx context.Context) (*pathEntry, error) {
				if m.Manifest.Digest == "" {
					return p.s.fetchPath(ctx, m.Hash)
				}
				return p.s.fetchPathManifest(ctx, backendIndex, m.Manifest)
			})
			p.count("closure", err)
		}()
	}
	wg.Wait()
}

// references walks the references of e breadth first, fetching each path
// not cached, once.
func (p *prefetcher) references(ctx context.Context, e *pathEntry) {
	seen := map[string]bool{spec.PathTag(e.art.Info.StorePath): true}
	level := []*pathEntry{e}
	for len(level) > 0 && ctx.Err() == nil {
		var mu sync.Mutex
		var next []*pathEntry
		var wg sync.WaitGroup
		for _, pe := range level {
			for _, ref := range pe.art.Info.References {
				h := spec.PathTag(ref)
				if seen[h] {
					continue
				}
				seen[h] = true
				if p.isCovered(h) {
					continue // a closure prefetch fetches it
				}
				if _, ok := p.s.narinfos.Get(h); ok {
					continue // Nix or a closure prefetch had it; its references too, likely
				}
				release, err := p.acquire(ctx)
				if err != nil {
					return
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer release()
					got, _, err := p.s.fetchShared(ctx, h, func(ctx context.Context) (*pathEntry, error) { return p.s.fetchPath(ctx, h) })
					p.count("references", err)
					if got != nil {
						mu.Lock()
						next = append(next, got)
						mu.Unlock()
					}
				}()
			}
		}
		wg.Wait()
		level = next
	}
}

func (p *prefetcher) acquire(ctx context.Context) (func(), error) {
	select {
	case p.sem <- struct{}{}:
		return func() { <-p.sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *prefetcher) count(via string, err error) {
	outcome := "ok"
	switch {
	case errors.Is(err, errNotFound):
		outcome = "not_found"
	case err != nil:
		outcome = "failed"
		p.s.log.Debug("prefetch failed; the path is fetched when asked", "err", err)
	}
	p.paths.WithLabelValues(via, outcome).Inc()
}

// refreshCatalogs reads every backend's closures now and then every
// interval until ctx ends.
func (s *Server) refreshCatalogs(ctx context.Context, interval time.Duration) {
	refresh := func() {
		for i, c := range s.catalogs {
			if err := c.Refresh(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("cannot read the closures of a backend; copied closures are not served until it works", "backend", s.backends.List()[i].Name, "err", err)
			}
		}
	}
	refresh()
	close(s.ready)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			refresh()
		}
	}
}

// fetchPathManifest reads the path manifest desc names from a backend.
func (s *Server) fetchPathManifest(ctx context.Context, i int, desc ocispec.Descriptor) (*pathEntry, error) {
	t := s.backends.List()[i].Target
	art, err := artifact.FetchPathManifest(ctx, t, desc)
	if err != nil {
		return nil, err
	}
	return s.newEntry(art, i)
}

// catalogLookup finds a path through the closures of the backends, for
// closures copied without their path tags. Until the catalogs were read
// once it waits for them (within ctx): a "not found" Nix would remember
// for an hour must not come from a catalog not read yet.
func (s *Server) catalogLookup(ctx context.Context, hash string) (*pathEntry, error) {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: waiting for the closures of the backends to be read: %w", hash, ctx.Err())
	}
	var errs []error
	for i, c := range s.catalogs {
		d, ok := c.Path(hash)
		if !ok {
			continue
		}
		e, err := s.fetchPathManifest(ctx, i, d)
		if err == nil {
			return e, nil
		}
		if !isNotFound(err) {
			errs = append(errs, err)
		}
	}
	return nil, errors.Join(errs...)
}
