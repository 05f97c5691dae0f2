// Package catalog knows which closures a target holds and which store
// paths they list (SPEC.md section 5.3): it lists the target's tags in
// the background, reads every closure it finds, and answers from memory
// "which path manifest holds the store path with this hash part" and
// "which paths form the closure of this root". That is how a substituter
// serves closures copied by OCI tools, which carry no path tags, and how
// it learns a whole closure when Nix asks for its root.
//
// Memory is bounded: a Catalog holds at most MaxPaths path entries (about
// 200 bytes each) and refuses closures beyond that, logging which.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// DefaultMaxPaths bounds the path entries of a Catalog: about 100 MB.
const DefaultMaxPaths = 500_000

// Member is one store path of a closure: its hash part and, for a
// version 2 closure, its path manifest (zero for version 1, whose paths
// are found by tag).
type Member struct {
	Hash     string
	Manifest ocispec.Descriptor
	// Closure is the digest of the version 2 closure index listing the
	// member (empty for version 1), whose entry describes it whole.
	Closure string
}

// Closure is what the catalog keeps of one closure.
type Closure struct {
	Descriptor ocispec.Descriptor
	Roots      []string // hash parts
	Members    []Member
}

// Catalog maps store paths to path manifests through the closures of one
// target. Its zero value is not usable; use New.
type Catalog struct {
	t        backend.Target
	name     string
	maxPaths int
	jobs     int

	mu       sync.RWMutex
	paths    map[string]ocispec.Descriptor // hash part -> path manifest (version 2)
	closures map[digest.Digest]*Closure    // closure digest -> closure
	byRoot   map[string][]*Closure         // root hash part -> closures rooted there
	foreign  map[digest.Digest]bool        // manifests that are not closures
	members  int                           // path entries held, over all closures
	last     struct {
		at  time.Time
		err error
	} // last refresh
}

// Options configure New; zero values mean the documented defaults.
type Options struct {
	// MaxPaths bounds the path entries held; default DefaultMaxPaths.
	MaxPaths int
	// Jobs bounds concurrent requests of a refresh; default 8.
	Jobs int
}

// New makes an empty catalog of t, named name in logs and errors.
func New(t backend.Target, name string, opts Options) *Catalog {
	if opts.MaxPaths <= 0 {
		opts.MaxPaths = DefaultMaxPaths
	}
	if opts.Jobs <= 0 {
		opts.Jobs = 8
	}
	return &Catalog{
		t: t, name: name, maxPaths: opts.MaxPaths, jobs: opts.Jobs,
		paths:    map[string]ocispec.Descriptor{},
		closures: map[digest.Digest]*Closure{},
		byRoot:   map[string][]*Closure{},
		foreign:  map[digest.Digest]bool{},
	}
}

// Path returns the path manifest of the store path with hash part hash,
// if a version 2 closure in the catalog lists it.
func (c *Catalog) Path(hash string) (ocispec.Descriptor, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	d, ok := c.paths[hash]
	return d, ok
}

// ClosureOf returns the smallest closure rooted at the store path with
// hash part hash.
func (c *Catalog) ClosureOf(hash string) (*Closure, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var best *Closure
	for _, cl := range c.byRoot[hash] {
		if best == nil || len(cl.Members) < len(best.Members) {
			best = cl
		}
	}
	return best, best != nil
}

// Stats reports how many closures and path entries the catalog holds.
func (c *Catalog) Stats() (closures, paths int) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.closures), len(c.paths)
}

// IsClosureTag reports whether a tag may name a closure: tags nixoci
// gives other artifacts (store-path hashes, referrers indexes, layers,
// composed images) cannot.
func IsClosureTag(tag string) bool {
	switch {
	case len(tag) == 32 && isNix32(tag),
		strings.HasPrefix(tag, "sha256-"),
		strings.Contains(tag, ".layer."),
		strings.HasPrefix(tag, "group."),
		strings.HasPrefix(tag, "compose."),
		spec.IsFileTag(tag):
		return false
	}
	return true
}

func isNix32(s string) bool {
	for i := 0; i < len(s); i++ {
		if !strings.ContainsRune("0123456789abcdfghijklmnpqrsvwxyz", rune(s[i])) {
			return false
		}
	}
	return true
}

// Add records a closure read from the target (for example one found
// through the referrers of its root). It reports false if the catalog is
// full.
func (c *Catalog) Add(cl *artifact.Closure) bool {
	entry := FromArtifact(cl)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.addLocked(entry)
}

func (c *Catalog) addLocked(cl *Closure) bool {
	if _, ok := c.closures[cl.Descriptor.Digest]; ok {
		return true
	}
	if c.members+len(cl.Members) > c.maxPaths {
		return false
	}
	c.closures[cl.Descriptor.Digest] = cl
	c.members += len(cl.Members)
	for _, m := range cl.Members {
		if m.Manifest.Digest != "" {
			c.paths[m.Hash] = m.Manifest
		}
	}
	for _, r := range cl.Roots {
		c.byRoot[r] = append(c.byRoot[r], cl)
	}
	return true
}

// FromArtifact keeps what the catalog needs of a closure read back.
func FromArtifact(a *artifact.Closure) *Closure {
	cl := &Closure{Descriptor: a.Descriptor}
	for _, r := range a.Roots {
		cl.Roots = append(cl.Roots, spec.PathTag(r))
	}
	if a.Version == spec.ClosureVersion {
		for _, d := range a.PathManifests {
			cl.Members = append(cl.Members, Member{
				Hash:     spec.PathTag(d.Annotations[spec.AnnotationStorePath]),
				Manifest: ocispec.Descriptor{MediaType: d.MediaType, ArtifactType: d.ArtifactType, Digest: d.Digest, Size: d.Size},
				Closure:  a.Descriptor.Digest.String(),
			})
		}
		return cl
	}
	for _, l := range a.Layers {
		if l.MediaType == spec.MediaTypeNarInfo {
			cl.Members = append(cl.Members, Member{Hash: strings.TrimSuffix(l.Annotations[spec.AnnotationTitle], ".narinfo")})
		}
	}
	return cl
}

// Refresh lists the target's tags page by page and reads every closure
// not read before; closures whose tags are gone are forgotten. Tags are
// resolved concurrently (Options.Jobs); a closure index is fetched only
// when its tag names a digest the catalog has not seen.
func (c *Catalog) Refresh(ctx context.Context) error {
	start := time.Now()
	err := c.refresh(ctx)
	c.mu.Lock()
	c.last.at, c.last.err = start, err
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%s: reading closures: %w", c.name, err)
	}
	closures, paths := c.Stats()
	slog.Debug("catalog refreshed", "target", c.name, "closures", closures, "paths", paths, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func (c *Catalog) refresh(ctx context.Context) error {
	var tags []string
	if err := c.t.Tags(ctx, "", func(page []string) error {
		for _, t := range page {
			if IsClosureTag(t) {
				tags = append(tags, t)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	descs := make([]ocispec.Descriptor, len(tags))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.jobs)
	for i, tag := range tags {
		g.Go(func() error {
			d, err := c.t.Resolve(gctx, tag)
			if isNotFound(err) {
				return nil // deleted since it was listed
			}
			descs[i] = d
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}

	c.mu.RLock()
	var unknown []int
	for i, d := range descs {
		if d.Digest == "" || c.foreign[d.Digest] {
			continue
		}
		if _, ok := c.closures[d.Digest]; !ok {
			unknown = append(unknown, i)
		}
	}
	c.mu.RUnlock()

	read := make([]*Closure, len(descs))
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(c.jobs)
	for _, i := range unknown {
		g.Go(func() error {
			a, err := artifact.ReadClosure(gctx, c.t, descs[i].Digest.String())
			switch {
			case errors.Is(err, artifact.ErrNotArtifact):
				c.mu.Lock()
				c.foreign[descs[i].Digest] = true
				c.mu.Unlock()
				return nil
			case isNotFound(err):
				return nil
			case err != nil:
				return fmt.Errorf("closure %s: %w", tags[i], err)
			}
			read[i] = FromArtifact(a)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	live := map[digest.Digest]bool{}
	for i, d := range descs {
		if d.Digest == "" {
			continue
		}
		live[d.Digest] = true
		if read[i] != nil && !c.addLocked(read[i]) {
			slog.Warn("catalog full: closure not held, its copied paths are not served", "target", c.name, "tag", tags[i], "paths", len(read[i].Members), "max", c.maxPaths)
		}
	}
	for d := range c.foreign {
		if !live[d] {
			delete(c.foreign, d)
		}
	}
	dropped := false
	for d := range c.closures {
		if !live[d] {
			delete(c.closures, d)
			dropped = true
		}
	}
	if dropped {
		c.reindexLocked()
	}
	return nil
}

// reindexLocked rebuilds the maps derived from the closures held.
func (c *Catalog) reindexLocked() {
	c.paths = map[string]ocispec.Descriptor{}
	c.byRoot = map[string][]*Closure{}
	c.members = 0
	for _, cl := range c.closures {
		c.members += len(cl.Members)
		for _, m := range cl.Members {
			if m.Manifest.Digest != "" {
				c.paths[m.Hash] = m.Manifest
			}
		}
		for _, r := range cl.Roots {
			c.byRoot[r] = append(c.byRoot[r], cl)
		}
	}
}

// LastRefresh reports when the last refresh started and how it ended.
func (c *Catalog) LastRefresh() (time.Time, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.last.at, c.last.err
}

func isNotFound(err error) bool { return errors.Is(err, errdef.ErrNotFound) }
