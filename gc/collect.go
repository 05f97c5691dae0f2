package gc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// Collect removes from t, named name in results and errors, what no root
// reaches and what was found unreachable for at least the grace period,
// following SPEC.md section 10: it marks, reads the mark record earlier
// collections left, and deletes what this mark and an earlier one at
// least opts.Grace before found unreachable, in batches of at most
// spec.GCBatch, each after a fresh look at the roots, announced by the
// nixoci-gc marker; an image layout's unreferenced blobs go last. What
// is unreachable but younger waits for a later collection (recorded,
// Result.Pending) unless opts.Wait. A registry that refuses deletes fails
// before anything is written.
func Collect(ctx context.Context, t backend.Target, name string, opts Options) (*Result, error) {
	start := time.Now()
	opts = opts.withDefaults()
	res, err := collectOnce(ctx, t, name, opts)
	if err != nil || !opts.Wait || opts.DryRun || len(res.Pending) == 0 {
		return res, err
	}
	// The one-shot form: wait until what this run found is old enough,
	// and collect again.
	until := res.Pending[0].DeletableAt
	for _, it := range res.Pending {
		if it.DeletableAt.After(until) {
			until = it.DeletableAt
		}
	}
	if err := waitUntil(ctx, until, opts.Progress); err != nil {
		return res, err
	}
	again, err := collectOnce(ctx, t, name, opts)
	if again != nil {
		again.Removed = append(res.Removed, again.Removed...)
		again.Spared += res.Spared
		again.Bytes += res.Bytes
		again.BlobFiles += res.BlobFiles
		again.Paths += res.Paths
		again.Took = time.Since(start)
	}
	return again, err
}

// collectOnce is one collection: no waiting.
func collectOnce(ctx context.Context, t backend.Target, name string, opts Options) (*Result, error) {
	start := time.Now()
	if opts.Retention != nil {
		if err := opts.Retention.Validate(); err != nil {
			return nil, err
		}
	}
	res := &Result{Target: name, DryRun: opts.DryRun, Grace: opts.Grace, Removed: []Item{}, Pending: []Item{}}
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
	record, err := readMarkRecord(ctx, t)
	if err != nil {
		return nil, err
	}

	c := &collection{t: t, opts: opts, res: res, m: newMarker(t, opts), settled: map[string]bool{}}
	c.layout, _ = t.(*backend.Layout)
	mk, err := c.m.mark(ctx)
	if err != nil {
		return nil, err
	}
	c.report(mk)
	due, pending := c.split(mk, record)
	res.Marked, res.Pending = mk.done, append(res.Pending, pending...)
	for _, it := range pending {
		if res.NextDeletable.IsZero() || it.DeletableAt.Before(res.NextDeletable) {
			res.NextDeletable = it.DeletableAt
		}
	}
	var blobs map[digest.Digest]backend.BlobFile
	if c.layout != nil {
		if blobs, err = c.blobCandidates(ctx, due); err != nil {
			return nil, err
		}
	}
	if opts.DryRun {
		res.Removed = append(res.Removed, due...)
		res.Bytes = itemBytes(due, mk.reach)
		if c.layout != nil {
			res.Bytes, res.BlobFiles = 0, len(blobs)
			for _, b := range blobs {
				res.Bytes += b.Size
			}
		}
		c.count()
		res.Took = time.Since(start)
		return res, nil
	}
	staleMarker := hasOld && old.Finished.IsZero()
	if len(due) == 0 && len(blobs) == 0 && !staleMarker {
		err := c.record(ctx, record, mk.done, due, pending)
		res.Took = time.Since(start)
		return res, err
	}

	// Marking took a while: another collection may have begun deleting
	// meanwhile. Look again just before announcing ours.
	if now, ok, err := artifact.ReadGCMarker(ctx, t); err != nil {
		return nil, err
	} else if ok && now.Running(time.Now()) && now.Descriptor.Digest != old.Descriptor.Digest && !opts.Force {
		return nil, fmt.Errorf("%s: %w: its marker (tag %s) appeared while this one marked, started at %s; nothing deleted",
			name, ErrCollectorRunning, spec.GCMarkerTag, now.Started.Format(time.RFC3339))
	}
	running, err := c.writeMarker(ctx, time.Now(), time.Time{})
	if err != nil {
		return nil, err
	}
	err = c.run(ctx, mk, due, blobs)
	// The finished marker is written whatever happened: pushes that began
	// before now check what they reused. Another collection's running
	// marker is left as it is: that collection finishes later.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if other, ok, rerr := artifact.ReadGCMarker(fctx, t); rerr == nil && ok && other.Running(time.Now()) && other.Descriptor.Digest != running.desc.Digest {
		slog.Warn("another nixoci gc ran at the same time; its marker stays", "target", name, "started", other.Started)
		c.dropMarker(fctx, running.desc.Digest)
	} else if _, ferr := c.writeMarker(fctx, running.started, time.Now()); ferr != nil {
		err = errors.Join(err, fmt.Errorf("writing the finished gc marker: %w", ferr))
	} else {
		c.dropMarker(fctx, running.desc.Digest)
		if hasOld && old.Descriptor.Digest != running.desc.Digest {
			c.dropMarker(fctx, old.Descriptor.Digest)
		}
	}
	if rerr := c.record(fctx, record, mk.done, due, pending); rerr != nil {
		err = errors.Join(err, rerr)
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
	// dropped are the closure tags retention dropped whose grace period
	// is over: no root in the looks before deleting.
	dropped map[string]digest.Digest
	// settled holds the keys of the items removed, or spared by a look.
	settled map[string]bool
	w       *walker // image layouts
}

// split divides what mk found unreachable into what is due (found so
// by an earlier mark at least the grace period before, as the record
// says) and what is pending, giving each its Since. Garbage still named
// by pending garbage (a closure whose dropped tag is pending names its
// paths) waits with it: nothing of ours is deleted while something that
// stays names it.
func (c *collection) split(mk *marking, record *markRecord) (due, pending []Item) {
	grace := c.opts.Grace
	for _, it := range mk.items {
		if s, ok := record.since(it); ok {
			it.Since = s
		} else {
			it.Since = mk.done
		}
		if it.Since.Add(grace).After(mk.done) {
			it.DeletableAt = it.Since.Add(grace)
			pending = append(pending, it)
		} else {
			due = append(due, it)
		}
	}
	// What stays reaches: the roots (with the dropped tags still
	// pending), and the closures pending. Moving a closure to pending
	// may keep more: repeat until nothing moves.
	var latest time.Time
	for _, it := range pending {
		if it.DeletableAt.After(latest) {
			latest = it.DeletableAt
		}
	}
	for moved := true; moved; {
		moved = false
		c.dropped = map[string]digest.Digest{}
		for _, it := range due {
			if it.Kind == KindClosureTag || it.Kind == KindClosure {
				for _, tag := range it.Tags {
					if d, ok := mk.dropped[tag]; ok && d == it.Digest {
						c.dropped[tag] = d
					}
				}
			}
		}
		if len(pending) == 0 {
			break
		}
		var count struct{ closures, images, others int }
		keep := rootsReach(mk.nodes, c.dropped, &count)
		for _, it := range pending {
			if n := c.m.reader.nodes[it.Digest]; it.Kind == KindClosure && n != nil {
				keep.add(n)
			}
		}
		stay := due[:0]
		for _, it := range due {
			if keep.reaches(it) {
				it.DeletableAt = latest
				pending = append(pending, it)
				moved = true
				continue
			}
			stay = append(stay, it)
		}
		due = stay
	}
	return due, pending
}

// record writes the mark record for the next collection: what is
// pending, and what was due but neither removed nor found in use again
// (a batch that ran out of time, a failed delete), each with its Since.
func (c *collection) record(ctx context.Context, old *markRecord, marked time.Time, due, pending []Item) error {
	items := slices.Clone(pending)
	for _, it := range due {
		if !c.settled[it.key()] {
			items = append(items, it)
		}
	}
	if err := writeMarkRecord(ctx, c.t, old, newMarkRecord(marked, items)); err != nil {
		return fmt.Errorf("writing the mark record: %w", err)
	}
	return nil
}

// run deletes the items due, and in an image layout then the blobs
// nothing reaches.
func (c *collection) run(ctx context.Context, mk *marking, due []Item, blobs map[digest.Digest]backend.BlobFile) error {
	c.opts.Progress.setPhase("deleting")
	if c.layout == nil {
		err := c.deleteFromRegistry(ctx, due)
		c.res.Bytes = itemBytes(c.res.Removed, mk.reach)
		return err
	}
	if err := c.deleteFromLayout(ctx, due); err != nil {
		return err
	}
	c.opts.Progress.setPhase("sweeping")
	return c.sweep(ctx, blobs)
}

// waitUntil sleeps until end, counting down in p.
func waitUntil(ctx context.Context, end time.Time, p *Progress) error {
	p.setPhase("waiting")
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		left := time.Until(end)
		if p != nil {
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
