package gc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// Collect removes from t, named name in results and errors, what no root
// reaches, following SPEC.md section 10: mark, write the nixoci-gc
// marker, wait the grace period, mark again, then delete what both marks
// found, in batches of at most spec.GCBatch, each after a fresh look at
// the roots; an image layout's unreferenced blobs go last. A registry
// that refuses deletes fails before anything is written.
func Collect(ctx context.Context, t backend.Target, name string, opts Options) (*Result, error) {
	start := time.Now()
	opts = opts.withDefaults()
	if opts.Retention != nil {
		if err := opts.Retention.Validate(); err != nil {
			return nil, err
		}
	}
	res := &Result{Target: name, DryRun: opts.DryRun, Removed: []Item{}}
	if d, ok := t.(backend.Deleter); ok {
		if err := d.CheckDelete(ctx); err != nil {
			refused := errors.Is(err, backend.ErrDeleteUnsupported) || errors.Is(err, backend.ErrDenied)
			if !opts.DryRun || !refused {
				return nil, err
			}
			res.DeletesRefused = err.Error()
		}
	}
	old, hasOld, err := artifact.ReadGCMarker(ctx, t)
	if err != nil {
		return nil, err
	}
	if hasOld && old.Running(time.Now()) && !opts.Force && !opts.DryRun {
		return nil, fmt.Errorf("%s: %w: its marker (tag %s) says it started at %s; if it died, run with --force (a dead collection's marker only makes pushes wait %v)",
			name, ErrCollectorRunning, spec.GCMarkerTag, old.Started.Format(time.RFC3339), spec.GCBatch)
	}

	c := &collection{t: t, opts: opts, res: res, m: newMarker(t, opts)}
	c.layout, _ = t.(*backend.Layout)
	mk1, err := c.m.mark(ctx)
	if err != nil {
		return nil, err
	}
	c.report(mk1)
	var blobs1 map[digest.Digest]backend.BlobFile
	if c.layout != nil {
		if blobs1, err = c.blobCandidates(ctx, mk1); err != nil {
			return nil, err
		}
	}
	if opts.DryRun {
		res.Removed = mk1.items
		res.Bytes = mk1.bytes
		if c.layout != nil {
			res.Bytes, res.BlobFiles = 0, len(blobs1)
			for _, b := range blobs1 {
				res.Bytes += b.Size
			}
		}
		c.count()
		res.Took = time.Since(start)
		return res, nil
	}
	staleMarker := hasOld && old.Finished.IsZero()
	if len(mk1.items) == 0 && len(blobs1) == 0 && !staleMarker {
		res.Took = time.Since(start)
		return res, nil
	}

	running, err := c.writeMarker(ctx, time.Now(), time.Time{})
	if err != nil {
		return nil, err
	}
	err = c.run(ctx, mk1, blobs1)
	// The finished marker is written whatever happened: pushes that began
	// before now check what they reused.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if _, ferr := c.writeMarker(fctx, running.started, time.Now()); ferr != nil {
		err = errors.Join(err, fmt.Errorf("writing the finished gc marker: %w", ferr))
	} else {
		c.dropMarker(fctx, running.desc.Digest)
		if hasOld && old.Descriptor.Digest != running.desc.Digest {
			c.dropMarker(fctx, old.Descriptor.Digest)
		}
	}
	c.count()
	res.Took = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("%s: %w", name, err)
	}
	return res, nil
}

// collection is one run of Collect.
type collection struct {
	t      backend.Target
	layout *backend.Layout // nil for a registry
	opts   Options
	res    *Result
	m      *marker
	// dropped are the closure tags retention dropped at both marks.
	dropped map[string]digest.Digest
	w       *walker // image layouts
}

// run waits the grace period, marks again and deletes.
func (c *collection) run(ctx context.Context, mk1 *marking, blobs1 map[digest.Digest]backend.BlobFile) error {
	if err := c.wait(ctx); err != nil {
		return err
	}
	mk2, err := c.m.mark(ctx)
	if err != nil {
		return err
	}
	c.report(mk2)
	items := intersect(mk1.items, mk2.items)
	c.res.Spared += len(mk1.items) - len(items)
	c.dropped = map[string]digest.Digest{}
	for tag, d := range mk1.dropped {
		if mk2.dropped[tag] == d {
			c.dropped[tag] = d
		}
	}
	c.opts.Progress.setPhase("deleting")
	if c.layout == nil {
		err := c.deleteFromRegistry(ctx, items)
		c.res.Bytes = itemBytes(c.res.Removed, mk2.reach)
		return err
	}
	blobs2, err := c.blobCandidates(ctx, mk2)
	if err != nil {
		return err
	}
	if err := c.deleteFromLayout(ctx, items); err != nil {
		return err
	}
	for d := range blobs1 {
		if _, ok := blobs2[d]; !ok {
			delete(blobs1, d)
		}
	}
	c.opts.Progress.setPhase("sweeping")
	return c.sweep(ctx, blobs1)
}

// wait sleeps the grace period, counting down in Progress.
func (c *collection) wait(ctx context.Context) error {
	if c.opts.Grace <= 0 {
		return nil
	}
	c.opts.Progress.setPhase("waiting")
	end := time.Now().Add(c.opts.Grace)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		left := time.Until(end)
		if p := c.opts.Progress; p != nil {
			p.Waiting.Store(int64(left.Seconds()))
		}
		if left <= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-time.After(left):
		}
	}
}

// report records a mark's roots and retention decisions in the result.
func (c *collection) report(mk *marking) {
	c.res.Closures, c.res.Images, c.res.Others = mk.roots.closures, mk.roots.images, mk.roots.others
	c.res.Kept, c.res.Dropped = mk.kept, mk.drop
}

// count fills the result's totals from what it lists.
func (c *collection) count() {
	c.res.Paths = 0
	for _, it := range c.res.Removed {
		if it.Kind == KindPath {
			c.res.Paths++
		}
	}
}

// intersect keeps the items of a found again by b, with the tags both
// saw.
func intersect(a, b []Item) []Item {
	inB := make(map[string]Item, len(b))
	for _, it := range b {
		inB[it.key()] = it
	}
	var out []Item
	for _, it := range a {
		other, ok := inB[it.key()]
		if !ok {
			continue
		}
		var tags []string
		for _, t := range it.Tags {
			for _, u := range other.Tags {
				if t == u {
					tags = append(tags, t)
				}
			}
		}
		if len(it.Tags) > 0 && len(tags) == 0 && it.Kind != KindClosure {
			continue // its tag moved
		}
		it.Tags = tags
		out = append(out, it)
	}
	return out
}

// runningMarker is the marker a collection wrote.
type runningMarker struct {
	started time.Time
	desc    struct{ Digest digest.Digest }
}

// writeMarker tags a marker of a collection started at started (and,
// unless zero, finished at finished).
func (c *collection) writeMarker(ctx context.Context, started, finished time.Time) (runningMarker, error) {
	m, err := artifact.NewGCMarker(started, finished)
	if err != nil {
		return runningMarker{}, err
	}
	if err := backend.PushBytes(ctx, c.t, spec.EmptyConfig, spec.EmptyConfigData); err != nil {
		return runningMarker{}, err
	}
	if err := c.t.PushReference(ctx, m.Descriptor, bytes.NewReader(m.Data), spec.GCMarkerTag); err != nil {
		return runningMarker{}, fmt.Errorf("writing the gc marker (tag %s): %w", spec.GCMarkerTag, err)
	}
	rm := runningMarker{started: started}
	rm.desc.Digest = m.Descriptor.Digest
	return rm, nil
}

// dropMarker deletes a marker manifest the marker tag no longer names
// (a layout's is swept as any unreferenced blob).
func (c *collection) dropMarker(ctx context.Context, d digest.Digest) {
	del, ok := c.t.(backend.Deleter)
	if !ok {
		return
	}
	cur, err := c.t.Resolve(ctx, spec.GCMarkerTag)
	if err == nil && cur.Digest == d {
		return
	}
	desc, err := c.t.Resolve(ctx, d.String())
	if err != nil {
		return
	}
	if err := del.DeleteManifest(ctx, desc, nil); err != nil && !errors.Is(err, errdef.ErrNotFound) {
		slog.Warn("could not delete an old gc marker", "digest", d, "err", err)
	}
}
