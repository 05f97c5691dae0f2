// Package catalog knows which closures a target holds and which store
// paths they list (SPEC.md section 5.3): it lists the target's tags in
// the background, reads every closure it finds, and answers from memory
// "which path manifest holds the store path with this hash part" and
// "which paths form the closure of this root". That is how a substituter
// serves closures copied by OCI tools, which carry no path tags, and how
// it learns a whole closure when Nix asks for its root.
//
// A catalog says a path is absent only when it read every closure of
// the target: while a refresh has not succeeded, or while a closure
// could not be read (an unreachable registry, a malformed or oversized
// index, a full catalog), a path it does not hold is ErrIncomplete, which
// a server answers as a failure (5xx), never as absence, since that
// closure may hold it. One closure that cannot be read does not hide the
// others.
//
// Memory is bounded: a Catalog holds at most MaxPaths path entries (about
// 200 bytes each) and refuses closures beyond that, logging which; a
// refresh holds at most MaxNamedTags tags (the ones that may name
// closures; path tags are passed over as they are listed, in batches).
//
// A refresh costs the registry little once the closures were read: the
// tag list (in pages of backend.TagPageSize tags) and one HEAD per tag
// that may name a closure; a closure is read again only when a tag names
// a digest the catalog does not hold (a closure that did not fit is
// remembered too, and read again only once there may be room).
package catalog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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

// MaxNamedTags bounds the tags a refresh resolves (every tag that may
// name a closure: one HEAD request each per refresh). Beyond it, the
// first ones in the registry's order are read and the catalog is
// incomplete.
const MaxNamedTags = 100_000

// ErrIncomplete: the catalog could not read every closure of its target,
// so it cannot say a path is absent.
var ErrIncomplete = errors.New("the closures of the target could not all be read")

// ErrNotFound: no closure of the target lists the path (and every
// closure was read). It is errdef.ErrNotFound, as backends say it.
var ErrNotFound = errdef.ErrNotFound

// Closure is what the catalog keeps of one closure: its roots' hash parts
// and its members (without their artifacts: artifact.Member.Path is nil).
type Closure struct {
	Descriptor ocispec.Descriptor
	Roots      []string // hash parts
	Members    []artifact.Member
	// Files maps the tags of the file artifacts the closure lists
	// (SPEC.md section 12.6) to their manifests; read by refreshes only.
	Files map[string]ocispec.Descriptor
}

// Catalog maps store paths to path manifests through the closures of one
// target. Its zero value is not usable; use New.
type Catalog struct {
	t         backend.Target
	name      string
	maxPaths  int
	jobs      int
	onRefresh func(Report)

	mu       sync.RWMutex
	paths    map[string][]*artifact.Member // hash part -> members (version 2), one per manifest claimed
	closures map[digest.Digest]*Closure    // closure digest -> closure
	byRoot   map[string][]*Closure         // root hash part -> closures rooted there
	foreign  map[digest.Digest]bool        // manifests that are not closures
	members  int                           // path entries held, over all closures
	unfit    map[digest.Digest]int         // closures that did not fit -> how many paths they need at least
	files    map[string]ocispec.Descriptor // file artifact tag -> manifest, from closures listing files
	// unread says why the catalog is incomplete: the failure of the last
	// refresh, or of the closures it could not read; nil once a refresh
	// read them all.
	unread error
	last   struct {
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
	// OnRefresh, if set, is called after each refresh with what it
	// did (for metrics).
	OnRefresh func(Report)
}

// Report is what one refresh did.
type Report struct {
	Tags  int           // tags listed
	Named int           // of which resolved: tags that may name a closure
	Read  int           // closures (and other manifests) read: digests not held before
	Took  time.Duration // wall time
	Err   error         // what could not be read, as Refresh returns it
}

// New makes an empty catalog of t, named name in logs and errors. Until
// a refresh succeeds it is incomplete.
func New(t backend.Target, name string, opts Options) *Catalog {
	if opts.MaxPaths <= 0 {
		opts.MaxPaths = DefaultMaxPaths
	}
	if opts.Jobs <= 0 {
		opts.Jobs = 8
	}
	return &Catalog{
		t: t, name: name, maxPaths: opts.MaxPaths, jobs: opts.Jobs, onRefresh: opts.OnRefresh,
		unfit:    map[digest.Digest]int{},
		paths:    map[string][]*artifact.Member{},
		closures: map[digest.Digest]*Closure{},
		byRoot:   map[string][]*Closure{},
		foreign:  map[digest.Digest]bool{},
		files:    map[string]ocispec.Descriptor{},
		unread:   errors.New("not read yet"),
	}
}

// Lookup returns the members of version 2 closures that list the store
// path with hash part hash: one per path manifest they name (closures
// may disagree, and a hostile one must not hide a good one: the caller
// checks each). A path no closure lists is an error wrapping ErrNotFound
// if the catalog read every closure of its target, else one wrapping
// ErrIncomplete that says what could not be read.
func (c *Catalog) Lookup(hash string) ([]artifact.Member, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if ms, ok := c.paths[hash]; ok {
		out := make([]artifact.Member, len(ms))
		for i, m := range ms {
			out[i] = *m
		}
		return out, nil
	}
	if c.unread != nil {
		return nil, fmt.Errorf("%s: %s is in no closure read, and %w: %w", c.name, hash, ErrIncomplete, c.unread)
	}
	return nil, fmt.Errorf("%s: %s is in no closure: %w", c.name, hash, ErrNotFound)
}

// File returns the manifest of the file artifact (a build log,
// realisation, listing or debug-info entry) that a closure listing files
// gives the tag tag, for a target whose copies carried no such tags
// (SPEC.md section 12.6). The caller checks what it fetches against the
// tag. Absence is an error wrapping ErrNotFound if the catalog read
// every closure, else one wrapping ErrIncomplete.
func (c *Catalog) File(tag string) (ocispec.Descriptor, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if d, ok := c.files[tag]; ok {
		return d, nil
	}
	if c.unread != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%s: %s is in no closure read, and %w: %w", c.name, tag, ErrIncomplete, c.unread)
	}
	return ocispec.Descriptor{}, fmt.Errorf("%s: %s is in no closure: %w", c.name, tag, ErrNotFound)
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

// Complete reports nil if the last refresh read every closure of the
// target, else why not.
func (c *Catalog) Complete() error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.unread != nil {
		return fmt.Errorf("%s: %w: %w", c.name, ErrIncomplete, c.unread)
	}
	return nil
}

// Add records a closure read from the target (for example one found
// through the referrers of its root). It reports false if the catalog is
// full.
func (c *Catalog) Add(cl *artifact.Closure) bool {
	entry := fromArtifact(cl)
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
	c.indexLocked(cl)
	return true
}

func (c *Catalog) indexLocked(cl *Closure) {
	c.members += len(cl.Members)
	for i := range cl.Members {
		m := &cl.Members[i]
		if m.Manifest.Digest == "" {
			continue
		}
		if !slices.ContainsFunc(c.paths[m.Hash], func(o *artifact.Member) bool { return o.Manifest.Digest == m.Manifest.Digest }) {
			c.paths[m.Hash] = append(c.paths[m.Hash], m)
		}
	}
	for _, r := range cl.Roots {
		c.byRoot[r] = append(c.byRoot[r], cl)
	}
	for tag, d := range cl.Files {
		if _, ok := c.files[tag]; !ok {
			c.files[tag] = d
		}
	}
}

// fromArtifact keeps what the catalog needs of a closure read back: the
// members without their artifacts, the roots' hash parts.
func fromArtifact(a *artifact.Closure) *Closure {
	cl := &Closure{Descriptor: a.Descriptor, Members: slices.Clone(a.Members)}
	for _, r := range a.Roots {
		cl.Roots = append(cl.Roots, spec.PathTag(r))
	}
	for i := range cl.Members {
		cl.Members[i].Path = nil
	}
	return cl
}

// Refresh lists the target's tags page by page and reads every closure
// not read before; closures whose tags are gone are forgotten. Tags are
// resolved concurrently (Options.Jobs); a closure index is fetched only
// when its tag names a digest the catalog has not seen. A closure that
// cannot be read is left out (the others are kept) and makes the catalog
// incomplete until a refresh reads it; a failure to list the tags keeps
// what was held and makes it incomplete too. The error says what could
// not be read.
func (c *Catalog) Refresh(ctx context.Context) error {
	start := time.Now()
	var rep Report
	err := c.refresh(ctx, &rep)
	c.mu.Lock()
	c.last.at, c.last.err = start, err
	c.unread = err
	c.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("%s: reading closures: %w", c.name, err)
	}
	rep.Took, rep.Err = time.Since(start), err
	if c.onRefresh != nil {
		c.onRefresh(rep)
	}
	if err != nil {
		return err
	}
	closures, paths := c.Stats()
	slog.Debug("catalog refreshed", "target", c.name, "tags", rep.Tags, "resolved", rep.Named, "read", rep.Read, "closures", closures, "paths", paths, "took", rep.Took.Round(time.Millisecond))
	return nil
}

func (c *Catalog) refresh(ctx context.Context, rep *Report) error {
	var tags []string
	overflow := 0
	if err := c.t.Tags(ctx, "", func(page []string) error {
		rep.Tags += len(page)
		for _, t := range page {
			switch {
			case spec.ClassifyTag(t) != spec.TagNamed:
			case len(tags) < MaxNamedTags:
				tags = append(tags, t)
			default:
				overflow++
			}
		}
		return nil
	}); err != nil && !isNotFound(err) { // a repository not created yet has no closures
		return fmt.Errorf("listing tags: %w", err)
	}
	rep.Named = len(tags)
	// Per tag: its closure's descriptor, and what failed reading it.
	descs := make([]ocispec.Descriptor, len(tags))
	failed := make([]error, len(tags))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.jobs)
	for i, tag := range tags {
		g.Go(func() error {
			d, err := c.t.Resolve(gctx, tag)
			switch {
			case isNotFound(err): // deleted since it was listed
			case err != nil:
				failed[i] = fmt.Errorf("tag %s: %w", tag, err)
			default:
				descs[i] = d
			}
			return nil
		})
	}
	g.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}

	c.mu.RLock()
	room := c.maxPaths - c.members
	var unknown []int
	for i, d := range descs {
		if d.Digest == "" || c.foreign[d.Digest] {
			continue
		}
		if _, ok := c.closures[d.Digest]; ok {
			continue
		}
		if need, ok := c.unfit[d.Digest]; ok && need > room {
			failed[i] = fmt.Errorf("closure %s (%s): %w", tags[i], d.Digest, c.fullError(need))
			continue
		}
		unknown = append(unknown, i)
	}
	c.mu.RUnlock()
	rep.Read = len(unknown)

	read := make([]*Closure, len(descs))
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(c.jobs)
	for _, i := range unknown {
		g.Go(func() error {
			r := artifact.ClosureReader{MaxPaths: max(room, 1), SkipPaths: true}
			a, err := r.Read(gctx, c.t, descs[i].Digest.String())
			switch {
			case errors.Is(err, artifact.ErrNotClosure):
				c.mu.Lock()
				c.foreign[descs[i].Digest] = true
				c.mu.Unlock()
			case isNotFound(err): // deleted since it was resolved
				descs[i] = ocispec.Descriptor{}
			case errors.Is(err, artifact.ErrTooLarge):
				// Over the room left: known again without reading it,
				// until there may be room.
				c.mu.Lock()
				c.unfit[descs[i].Digest] = max(room, 1) + 1
				c.mu.Unlock()
				failed[i] = fmt.Errorf("closure %s (%s): %w", tags[i], descs[i].Digest, err)
			case err != nil:
				failed[i] = fmt.Errorf("closure %s (%s): %w", tags[i], descs[i].Digest, err)
			default:
				files, err := fileTags(gctx, c.t, a)
				if err != nil {
					failed[i] = fmt.Errorf("closure %s (%s): %w", tags[i], descs[i].Digest, err)
					return nil
				}
				read[i] = fromArtifact(a)
				read[i].Files = files
			}
			return nil
		})
	}
	g.Wait()
	if err := ctx.Err(); err != nil {
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
			c.unfit[d.Digest] = len(read[i].Members)
			failed[i] = fmt.Errorf("closure %s (%s): %w", tags[i], d.Digest, c.fullError(len(read[i].Members)))
		}
	}
	for d := range c.foreign {
		if !live[d] {
			delete(c.foreign, d)
		}
	}
	for d := range c.unfit {
		if _, held := c.closures[d]; held || !live[d] {
			delete(c.unfit, d)
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
	var errs []error
	for _, err := range failed {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if overflow > 0 {
		errs = append(errs, fmt.Errorf("%d more tags that may name closures not read: over %d", overflow, MaxNamedTags))
	}
	return unreadable(errs)
}

// fullError says a closure of need paths does not fit.
func (c *Catalog) fullError(need int) error {
	return fmt.Errorf("%d paths or more do not fit: the catalog is full (%d paths)", need, c.maxPaths)
}

// unreadable summarises the closures a refresh could not read: the first
// few by name, so a log line stays short.
func unreadable(errs []error) error {
	const shown = 3
	if len(errs) == 0 {
		return nil
	}
	err := errors.Join(errs[:min(len(errs), shown)]...)
	if len(errs) > shown {
		err = fmt.Errorf("%w\n(and %d more)", err, len(errs)-shown)
	}
	return fmt.Errorf("%d closures unreadable: %w", len(errs), err)
}

// reindexLocked rebuilds the maps derived from the closures held.
func (c *Catalog) reindexLocked() {
	c.paths = map[string][]*artifact.Member{}
	c.byRoot = map[string][]*Closure{}
	c.files = map[string]ocispec.Descriptor{}
	c.members = 0
	for _, cl := range c.closures {
		c.indexLocked(cl)
	}
}

// LastRefresh reports when the last refresh started and how it ended.
func (c *Catalog) LastRefresh() (time.Time, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.last.at, c.last.err
}

func isNotFound(err error) bool { return errors.Is(err, errdef.ErrNotFound) }

// fileTags reads the file artifacts a closure lists, each checked
// (artifact.FetchClosureFile), and maps their tags to their manifests.
func fileTags(ctx context.Context, t backend.Target, a *artifact.Closure) (map[string]ocispec.Descriptor, error) {
	if len(a.Files) == 0 {
		return nil, nil
	}
	files, err := artifact.ClosureFiles(ctx, t, a, 4)
	if err != nil {
		return nil, fmt.Errorf("file artifact %w", err)
	}
	out := make(map[string]ocispec.Descriptor, len(files))
	for _, cf := range files {
		tags, err := artifact.FileTags(cf.Artifact, cf.StorePath)
		if err != nil {
			return nil, err
		}
		for _, tag := range tags {
			out[tag] = cf.Artifact.Manifest
		}
	}
	return out, nil
}
