package substituter

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixoci/nixoci/artifact"
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
//   - any other path, and every path found at an upstream (pull.go):
//     its references, then theirs, once each (at most maxWalk), once the
//     closure searches under way when Nix asked have ended (the path is
//     likely one of theirs). Each goes through the resolver, backends
//     first, so a closure partly stored and partly upstream is walked
//     as one.
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
		if i, ok := e.backendIndex(); ok {
			done := p.searching()
			cl, ok := p.closureOf(ctx, i, e, hash)
			done()
			if ok {
				if cl != nil {
					p.members(ctx, i, nextFirst(cl.Members, e))
				}
				return
			}
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

// closureOf finds the closure rooted at the path, which backend i
// holds: from the catalog, else from the referrers of its manifest,
// recording its paths as covered, and reads it with its entries' paths
// (artifact.Member.Path). A closure prefetched a moment ago is not read
// again (ok, but cl nil).
func (p *prefetcher) closureOf(ctx context.Context, i int, e *pathEntry, hash string) (cl *artifact.Closure, ok bool) {
	cat := p.s.catalogs[i]
	var desc ocispec.Descriptor
	var members []artifact.Member
	source := "catalog"
	if c, found := cat.ClosureOf(hash); found {
		desc, members = c.Descriptor, c.Members
	} else {
		var err error
		if cl, err = p.fromReferrers(ctx, i, e); err != nil {
			p.s.log.Debug("prefetch: no closure from referrers", "path", e.Artifact.Info.StorePath, "err", err)
		}
		if cl == nil {
			return nil, false
		}
		desc, members, source = cl.Descriptor, cl.Members, "referrers"
	}
	key := desc.Digest.String()
	for _, m := range members {
		p.covered.Put(m.Hash, struct{}{}, p.s.opts.CacheTTL)
	}
	p.mu.Lock() // one prefetch of a closure found by several lookups at once
	_, seen := p.closures.Get(key)
	if !seen {
		p.closures.Put(key, struct{}{}, p.s.opts.CacheTTL)
	}
	p.mu.Unlock()
	if seen {
		return nil, true // fetched already; nothing more to learn
	}
	p.found.WithLabelValues(source).Inc()
	if cl == nil {
		// The catalog keeps members without their paths: read the index
		// again for them (one request, one per part), so the closure is
		// learned without a request per path. If that fails, each path
		// is fetched by itself.
		if cl = p.readClosure(ctx, i, key); cl == nil {
			cl = &artifact.Closure{Descriptor: desc, Members: members}
		}
	}
	return cl, true
}

// readClosure reads the closure with digest d from backend i with its
// entries' paths; nil if it cannot.
func (p *prefetcher) readClosure(ctx context.Context, i int, d string) *artifact.Closure {
	release, err := p.acquire(ctx)
	if err != nil {
		return nil
	}
	defer release()
	a, err := artifact.ReadClosure(ctx, p.s.backends.List()[i].Target, d)
	if err != nil {
		p.s.log.Debug("prefetch: cannot read the closure index; fetching its paths one by one", "closure", d, "err", err)
		return nil
	}
	return a
}

// fromReferrers reads the smallest version 2 closure (with files or
// not) whose subject is the path's manifest in backend i and adds it to
// the catalog.
func (p *prefetcher) fromReferrers(ctx context.Context, i int, e *pathEntry) (*artifact.Closure, error) {
	t := p.s.backends.List()[i].Target
	var best ocispec.Descriptor
	bestCount := -1
	release, err := p.acquire(ctx)
	if err != nil {
		return nil, err
	}
	// Every artifact type: closures with files (SPEC.md section 12.6)
	// have one of their own.
	err = t.Referrers(ctx, e.Artifact.Manifest, "", func(refs []ocispec.Descriptor) error {
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
		return nil, err
	}
	a := p.readClosure(ctx, i, best.Digest.String())
	if a == nil {
		return nil, fmt.Errorf("closure %s of %s cannot be read", best.Digest, e.Artifact.Info.StorePath)
	}
	p.s.catalogs[i].Add(a) // if full, the closure is used without being kept
	return a, nil
}

// nextFirst orders members so that e's references, which Nix asks for
// next, are fetched first.
func nextFirst(members []artifact.Member, e *pathEntry) []artifact.Member {
	refs := map[string]bool{}
	for _, r := range e.Artifact.Info.References {
		refs[spec.PathTag(r)] = true
	}
	out := make([]artifact.Member, 0, len(members))
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

// members fetches the closure's paths Nix has not been answered yet:
// those whose index entry carries the path at once, the others from
// backend i, as the closure claims them (by manifest digest, or by tag
// for a version 1 closure), within the bound on requests ahead.
func (p *prefetcher) members(ctx context.Context, i int, members []artifact.Member) {
	var wg sync.WaitGroup
	source := p.s.backends.List()[i].Name
	// Paths the index describes whole cost no request, only the checks
	// and signatures of rendering them (an ed25519 verification and
	// signature each): rendered on every CPU, in order, so Nix's next
	// requests find them soon.
	whole := make(chan artifact.Member)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range whole {
				f := Found{Artifact: *m.Path, NAR: backendNAR{Backend: i, Desc: m.Path.NAR}}
				_, _, err := p.s.resolver.shared(ctx, m.Hash, func(_ context.Context, hash string) (*pathEntry, error) {
					return p.s.resolver.entry(hash, source, f)
				})
				p.count("closure", err)
			}
		}()
	}
	for _, m := range members {
		if _, ok := p.s.resolver.cached(m.Hash); ok {
			continue
		}
		fetch := func(ctx context.Context, hash string) (*pathEntry, error) {
			f, err := p.s.fromBackend(ctx, i, m.Claim())
			if isNotFound(err) {
				return nil, errNotFound
			} else if err != nil {
				return nil, err
			}
			return p.s.resolver.entry(hash, source, f)
		}
		if m.Path != nil {
			whole <- m
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
			_, _, err := p.s.resolver.shared(ctx, m.Hash, fetch)
			p.count("closure", err)
		}()
	}
	close(whole)
	wg.Wait()
}

// maxWalk bounds the paths one walk of references fetches (a large
// NixOS system closure has a few thousand): with a narinfo of about 1
// KiB, a walk holds at most about 10 MiB of entries, in the narinfo
// cache (CacheSize) it fills; NARs are fetched ahead only within the
// blob cache's bounds.
const maxWalk = 10_000

// references walks the references of e breadth first, fetching each path
// not cached, once, at most maxWalk of them.
func (p *prefetcher) references(ctx context.Context, e *pathEntry) {
	seen := map[string]bool{spec.PathTag(e.Artifact.Info.StorePath): true}
	walked := 0
	level := []*pathEntry{e}
	for len(level) > 0 && ctx.Err() == nil {
		var mu sync.Mutex
		var next []*pathEntry
		var wg sync.WaitGroup
		for _, pe := range level {
			for _, ref := range pe.Artifact.Info.References {
				h := spec.PathTag(ref)
				if seen[h] {
					continue
				}
				seen[h] = true
				if p.isCovered(h) {
					continue // a closure prefetch fetches it
				}
				if _, ok := p.s.resolver.cached(h); ok {
					continue // Nix or a closure prefetch had it; its references too, likely
				}
				if walked++; walked > maxWalk {
					break
				}
				release, err := p.acquire(ctx)
				if err != nil {
					return
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer release()
					got, _, err := p.s.resolver.resolve(ctx, h)
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
				s.log.Warn("cannot read every closure of a backend; until a refresh can, paths its closures read do not list are answered 5xx, not 404", "backend", s.backends.List()[i].Name, "err", err)
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
