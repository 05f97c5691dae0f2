package imageregistry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/image"
	"github.com/nixoci/nixoci/internal/serving"
	"github.com/nixoci/nixoci/spec"
)

// ErrBusy: as many compositions as Options.MaxCompositions are running;
// the client is told to come back (503 with Retry-After).
var ErrBusy = errors.New("too many images being composed")

// composed is an image composed for a composition.
type composed struct {
	closures []string // digests of the closures it was made from
	backend  int      // index of the backend it was composed in
	desc     ocispec.Descriptor
	data     []byte
	// reach is every manifest and blob the image (or index) reaches:
	// the only digests its repository names serve.
	reach map[digest.Digest]ocispec.Descriptor
}

// reaches reports whether d is the image's manifest or index, or a
// manifest, config or layer under it.
func (c *composed) reaches(d digest.Digest) (ocispec.Descriptor, bool) {
	desc, ok := c.reach[d]
	return desc, ok
}

// newComposed records what an image build stored.
func newComposed(closures []string, b int, res *image.Result) *composed {
	c := &composed{closures: closures, backend: b, desc: res.Manifest, data: res.ManifestData,
		reach: map[digest.Digest]ocispec.Descriptor{res.Manifest.Digest: res.Manifest}}
	for _, img := range res.Images {
		c.reach[img.Manifest.Digest] = img.Manifest
		c.reach[img.Config.Digest] = img.Config
		for _, l := range img.Layers {
			c.reach[l.Descriptor.Digest] = l.Descriptor
		}
	}
	return c
}

// cached returns the image of a repository name composed before, if it
// is still remembered, without asking the backends whether its closures
// moved since: enough to tell whether a digest is the image's.
func (g *Registry) cached(name string) (*composed, bool) {
	return g.composed.Get(g.composeSpec(name).key())
}

// compose returns the image of a repository name, composing it if its
// closures changed since (or it was never composed).
func (g *Registry) compose(ctx context.Context, name string) (*composed, error) {
	c := g.composeSpec(name)
	key := c.key()
	b, digests, err := g.closureBackend(ctx, c.closures)
	if err != nil {
		return nil, err
	}
	if cached, ok := g.composed.Get(key); ok && slices.Equal(cached.closures, digests) {
		g.metrics.cache.Count(true)
		return cached, nil
	}
	g.metrics.cache.Count(false)
	v, err, _ := g.flight.Do("compose/"+key, func() (any, error) {
		select {
		case g.running <- struct{}{}:
			defer func() { <-g.running }()
		default:
			g.metrics.busy.Inc()
			return nil, fmt.Errorf("%w (%d at once)", ErrBusy, cap(g.running))
		}
		// Composition may convert layers: it is not bounded by the
		// metadata timeout, and it outlives an impatient first client.
		ctx := context.WithoutCancel(ctx)
		start := time.Now()
		opts := c.opts
		if !c.explicit {
			for _, d := range digests { // the closures just resolved, even if a tag moved since
				cl, err := closureRoots(ctx, g.backends.List()[b].Target, d)
				if err != nil {
					return nil, err
				}
				opts.LinkRoots = append(opts.LinkRoots, cl...)
			}
		}
		tag := composeTag(key)
		if g.opts.Ephemeral {
			tag = ""
		}
		g.log.Info("composing image", "name", name, "closures", strings.Join(c.closures, " "))
		target := g.backends.List()[b].Target
		res, err := image.BuildUnion(ctx, target, c.closures, target, tag, opts)
		if err != nil {
			g.metrics.failed.Inc()
			return nil, err
		}
		g.metrics.composedOK.Inc()
		g.metrics.seconds.Observe(time.Since(start).Seconds())
		g.metrics.converted.Add(float64(res.Converted))
		g.metrics.reused.Add(float64(res.Reused))
		var platforms []string
		for _, img := range res.Images {
			platforms = append(platforms, spec.PlatformString(img.Platform))
		}
		g.log.Info("composed image", "name", name, "digest", res.Manifest.Digest, "platforms", strings.Join(platforms, " "),
			"converted", res.Converted, "reused", res.Reused, "duration", time.Since(start).Round(time.Millisecond))
		out := newComposed(digests, b, res)
		g.composed.Put(key, out, g.opts.CacheTTL)
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*composed), nil
}

// closureBackend returns the index of the first backend holding every
// closure tag, with the digests the tags name there. A backend that
// fails (rather than lacking a tag) fails the lookup: the image could be
// composed from a later one and differ from what the failing one would
// give.
func (g *Registry) closureBackend(ctx context.Context, tags []string) (int, []string, error) {
	ctx, cancel := context.WithTimeout(ctx, g.backends.Timeout())
	defer cancel()
	var missing []string
	for i, b := range g.backends.List() {
		var digests []string
		for _, tag := range tags {
			d, err := b.Target.Resolve(ctx, tag)
			if serving.IsNotFound(err) {
				missing = append(missing, fmt.Sprintf("closure %s not in %s", tag, b.Name))
				break
			}
			if err != nil {
				return 0, nil, fmt.Errorf("closure %s in %s: %w", tag, b.Name, err)
			}
			digests = append(digests, d.Digest.String())
		}
		if len(digests) == len(tags) {
			return i, digests, nil
		}
	}
	return 0, nil, fmt.Errorf("no backend holds all of %s (%s): %w",
		strings.Join(tags, ", "), strings.Join(missing, "; "), errdef.ErrNotFound)
}

// closureRoots returns the roots of a closure stored in t.
func closureRoots(ctx context.Context, t backend.Target, ref string) ([]string, error) {
	c, err := artifact.ReadClosure(ctx, t, ref)
	if err != nil {
		return nil, err
	}
	return c.Roots, nil
}

// key is the canonical form of a composition: names that resolve to the
// same closures and options ("a/b", "b/a", "a/a/b") have one key, so
// one composition, one cache entry and one compose tag.
func (c composition) key() string {
	data, _ := json.Marshal(struct {
		Closures                         []string
		LinkRoots, Entrypoint, Cmd, Env  []string
		User, BuildpacksStack            string
		BuildpacksBuild, Explicit, Guess bool
	}{c.closures, c.opts.LinkRoots, c.opts.Entrypoint, c.opts.Cmd, c.opts.Env,
		c.opts.User, c.opts.BuildpacksStack, c.opts.BuildpacksBuild, c.explicit, c.opts.DefaultCmd})
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// composeTag is the tag a composition with key key is stored under.
func composeTag(key string) string { return "compose." + key[:40] }
