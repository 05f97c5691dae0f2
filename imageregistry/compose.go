package imageregistry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/image"
	"github.com/nixoci/nixoci/internal/serving"
	"github.com/nixoci/nixoci/spec"
)

// compose returns the image of a repository name, composing it if its
// closures changed since (or it was never composed).
func (g *Registry) compose(ctx context.Context, name string) (*composed, error) {
	c := g.composeSpec(name)
	b, digests, err := g.closureBackend(ctx, c.closures)
	if err != nil {
		return nil, err
	}
	if cached, ok := g.composed.Get(name); ok && slices.Equal(cached.closures, digests) {
		g.metrics.cache.Count(true)
		return cached, nil
	}
	g.metrics.cache.Count(false)
	v, err, _ := g.flight.Do("compose/"+name, func() (any, error) {
		// Composition may convert layers: it is not bounded by the
		// metadata timeout, and it outlives an impatient first client.
		ctx := context.WithoutCancel(ctx)
		start := time.Now()
		opts := c.opts
		if !c.explicit {
			for _, d := range digests { // the closures just resolved, even if a tag moved since
				cl, err := closureRoots(ctx, b.Target, d)
				if err != nil {
					return nil, err
				}
				opts.LinkRoots = append(opts.LinkRoots, cl...)
			}
		}
		g.log.Info("composing image", "name", name, "closures", strings.Join(c.closures, " "))
		res, err := image.BuildUnion(ctx, b.Target, c.closures, b.Target, composeTag(name), opts)
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
		out := &composed{closures: digests, desc: res.Manifest, data: res.ManifestData}
		g.composed.Put(name, out, g.opts.CacheTTL)
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*composed), nil
}

// closureBackend returns the first backend holding every closure tag,
// with the digests the tags name there. A backend that fails (rather
// than lacking a tag) fails the lookup: the image could be composed
// from a later one and differ from what the failing one would give.
func (g *Registry) closureBackend(ctx context.Context, tags []string) (serving.Backend, []string, error) {
	ctx, cancel := context.WithTimeout(ctx, g.backends.Timeout())
	defer cancel()
	var missing []string
	for _, b := range g.backends.List() {
		var digests []string
		for _, tag := range tags {
			d, err := b.Target.Resolve(ctx, tag)
			if serving.IsNotFound(err) {
				missing = append(missing, fmt.Sprintf("closure %s not in %s", tag, b.Name))
				break
			}
			if err != nil {
				return serving.Backend{}, nil, fmt.Errorf("closure %s in %s: %w", tag, b.Name, err)
			}
			digests = append(digests, d.Digest.String())
		}
		if len(digests) == len(tags) {
			return b, digests, nil
		}
	}
	return serving.Backend{}, nil, fmt.Errorf("no backend holds all of %s (%s): %w",
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

// composeTag is the tag a composed image is stored under.
func composeTag(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "compose." + hex.EncodeToString(sum[:])[:40]
}
