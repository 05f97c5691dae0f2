package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// freshLook is the look taken before each batch of deletions: the named
// tags listed and resolved again, what is new read, and what the roots
// reach now (the closure tags retention dropped, if they still name what
// they named, are not roots).
func (c *collection) freshLook(ctx context.Context, lk *look) (*reach, error) {
	nodes, err := c.m.reader.readNamed(ctx, lk, c.opts.Jobs, nil)
	if err != nil {
		return nil, err
	}
	var count struct{ closures, images, others int }
	return rootsReach(nodes, c.dropped, &count), nil
}

// spared reports whether a fresh look found it needed again, or its
// tag moved.
func spared(it Item, lk *look, rc *reach) bool {
	if it.Kind == KindClosureTag {
		return lk.named[it.Tags[0]].Digest != it.Digest
	}
	return rc.reaches(it)
}

// deleteFromRegistry deletes items in batches: before each, a fresh look
// at the roots; a batch starts deletions for at most half of
// spec.GCBatch and every request of it ends within spec.GCBatch of the
// look, so that a push waiting spec.GCBatch after its tag sees every
// deletion begun before it.
func (c *collection) deleteFromRegistry(ctx context.Context, items []Item) error {
	del := c.t.(backend.Deleter)
	queue := items
	var errs []error
	for len(queue) > 0 && len(errs) == 0 {
		looked := time.Now()
		lk, err := lookAt(ctx, c.t, c.opts.Jobs, c.opts.Progress)
		if err != nil {
			return err
		}
		rc, err := c.freshLook(ctx, lk)
		if err != nil {
			return err
		}
		lookTook := time.Since(looked)
		bctx, cancel := context.WithDeadline(ctx, looked.Add(spec.GCBatch))
		var rest []Item
		var mu sync.Mutex
		for g := 0; g < len(queue); {
			// One kind group at a time: what names comes before what is named.
			end := g
			for end < len(queue) && order[queue[end].Kind] == order[queue[g].Kind] {
				end++
			}
			var wg sync.WaitGroup
			sem := make(chan struct{}, c.opts.Jobs)
			for i := g; i < end; i++ {
				it := queue[i]
				if time.Since(looked) > spec.GCBatch/2 {
					mu.Lock()
					rest = append(rest, queue[i:end]...)
					mu.Unlock()
					break
				}
				if spared(it, lk, rc) {
					mu.Lock()
					c.spare(it)
					mu.Unlock()
					continue
				}
				sem <- struct{}{}
				wg.Add(1)
				go func() {
					defer func() { <-sem; wg.Done() }()
					err := deleteItem(bctx, del, it)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil, errors.Is(err, errdef.ErrNotFound):
						c.removed(it)
					case errors.Is(err, backend.ErrTagMoved):
						c.spare(it)
					case bctx.Err() != nil && ctx.Err() == nil:
						rest = append(rest, it) // the batch's time ran out
					default:
						errs = append(errs, fmt.Errorf("deleting %s %s: %w", it.Kind, it.Digest, err))
					}
				}()
			}
			wg.Wait()
			if len(rest) > 0 {
				rest = append(rest, queue[end:]...)
				break
			}
			g = end
		}
		cancel()
		slog.Debug("gc batch", "look", lookTook.Round(time.Millisecond), "took", time.Since(looked).Round(time.Millisecond),
			"queued", len(queue), "left", len(rest))
		queue = rest
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}

// deleteItem removes one item from a registry.
func deleteItem(ctx context.Context, del backend.Deleter, it Item) error {
	if it.Kind == KindClosureTag {
		return del.Untag(ctx, it.Tags[0], it.Digest)
	}
	return del.DeleteManifest(ctx, it.descriptor(), it.subject)
}

// removed records it as gone.
func (c *collection) removed(it Item) {
	c.settled[it.key()] = true
	c.res.Removed = append(c.res.Removed, it)
	if p := c.opts.Progress; p != nil {
		p.Removed.Add(1)
	}
}

// spare records it as found in use again (or its tag moved): not
// deleted, and no longer unreachable since it was.
func (c *collection) spare(it Item) {
	c.settled[it.key()] = true
	c.res.Spared++
}
