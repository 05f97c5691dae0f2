package gc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// deleteFromLayout removes the items' tags and referrers entries from
// index.json in batches, each under the layout's lock after a fresh look
// at its entries (no writer tags meanwhile), each at most half of
// spec.GCBatch long. Their blobs go in the sweep.
func (c *collection) deleteFromLayout(ctx context.Context, items []Item) error {
	queue := items
	for len(queue) > 0 {
		var done int
		err := c.layout.Update(ctx, func(tx *backend.LayoutTx) error {
			looked := time.Now()
			lk := lookAtEntries(tx.Entries())
			rc, err := c.freshLook(ctx, lk)
			if err != nil {
				return err
			}
			for done < len(queue) && time.Since(looked) < spec.GCBatch/2 {
				it := queue[done]
				done++
				if spared(it, lk, rc) {
					c.spare(it)
					continue
				}
				moved := false
				for _, tag := range it.Tags {
					if cur, ok := tx.Tag(tag); ok && !tx.Untag(tag, it.Digest) {
						moved = moved || cur.Digest != it.Digest
					}
				}
				if moved && it.Kind == KindClosureTag {
					c.spare(it)
					continue
				}
				if it.subject != nil {
					tx.DropReferrer(it.subject.Digest, it.Digest)
				}
				c.removed(it)
			}
			return nil
		})
		if err != nil {
			return err
		}
		queue = queue[done:]
	}
	return nil
}

// blobCandidates lists the layout's blob files that nothing reaches once
// items are gone: walked from every index.json entry but the items'
// tags, never into an item's manifest.
func (c *collection) blobCandidates(ctx context.Context, items []Item) (map[digest.Digest]backend.BlobFile, error) {
	gone := map[digest.Digest]bool{}
	goneTags := map[string]bool{}
	for _, it := range items {
		if it.Kind != KindClosureTag {
			gone[it.Digest] = true
		}
		for _, t := range it.Tags {
			goneTags[t] = true
		}
	}
	var entries []ocispec.Descriptor
	err := c.layout.Update(ctx, func(tx *backend.LayoutTx) error {
		for _, e := range tx.Entries() {
			if !goneTags[e.Annotations[ocispec.AnnotationRefName]] {
				entries = append(entries, e)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	w := c.walker()
	reached, err := w.reach(ctx, entries, gone)
	if err != nil {
		return nil, err
	}
	out := map[digest.Digest]backend.BlobFile{}
	err = c.layout.Blobs(ctx, func(b backend.BlobFile) error {
		if !reached[b.Digest] {
			out[b.Digest] = b
		}
		return nil
	})
	return out, err
}

// sweep deletes the candidate blobs nothing reaches now and that are
// older than the grace period, in batches under the layout's lock, each
// after walking index.json's entries afresh.
func (c *collection) sweep(ctx context.Context, candidates map[digest.Digest]backend.BlobFile) error {
	queue := make([]digest.Digest, 0, len(candidates))
	for d := range candidates {
		queue = append(queue, d)
	}
	w := c.walker()
	for len(queue) > 0 {
		var done int
		err := c.layout.Update(ctx, func(tx *backend.LayoutTx) error {
			looked := time.Now()
			reached, err := w.reach(ctx, tx.Entries(), nil)
			if err != nil {
				return err
			}
			notAfter := looked.Add(-c.opts.Grace)
			for done < len(queue) && time.Since(looked) < spec.GCBatch/2 {
				d := queue[done]
				done++
				if reached[d] {
					c.res.Spared++
					continue
				}
				size, ok, err := tx.DeleteBlob(d, notAfter)
				if errors.Is(err, errdef.ErrNotFound) {
					continue
				} else if err != nil {
					return err
				}
				if ok {
					c.res.BlobFiles++
					c.res.Bytes += size
					if p := c.opts.Progress; p != nil {
						p.Blobs.Add(1)
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		queue = queue[done:]
	}
	return nil
}

// walker walks what an image layout's entries reach, reading each
// manifest once per collection.
type walker struct {
	l        *backend.Layout
	children map[digest.Digest][]ocispec.Descriptor
}

func (c *collection) walker() *walker {
	if c.w == nil {
		c.w = &walker{l: c.layout, children: map[digest.Digest][]ocispec.Descriptor{}}
	}
	return c.w
}

// reach returns every digest the entries reach (manifests, indexes and
// blobs, through config, layers, manifests and subject), not entering
// the manifests in skip. A manifest whose blob is missing reaches
// nothing more; one that cannot be read fails the walk, since what it
// reaches is unknown.
func (w *walker) reach(ctx context.Context, entries []ocispec.Descriptor, skip map[digest.Digest]bool) (map[digest.Digest]bool, error) {
	reached := map[digest.Digest]bool{}
	stack := make([]ocispec.Descriptor, 0, len(entries))
	for _, e := range entries {
		stack = append(stack, plain(e))
	}
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if reached[d.Digest] || skip[d.Digest] {
			continue
		}
		reached[d.Digest] = true
		if !backend.IsManifest(d.MediaType) {
			continue
		}
		kids, ok := w.children[d.Digest]
		if !ok {
			data, err := backend.FetchAll(ctx, w.l, d, backend.MaxManifestRead)
			if errors.Is(err, errdef.ErrNotFound) {
				continue
			} else if err != nil {
				return nil, fmt.Errorf("oci:%s: reading %s to find what it reaches (no blob is deleted while it cannot be read): %w", w.l.Dir(), d.Digest, err)
			}
			succ, err := backend.Successors(d, data)
			if err != nil {
				return nil, fmt.Errorf("oci:%s: %w", w.l.Dir(), err)
			}
			for _, s := range succ {
				kids = append(kids, ocispec.Descriptor{MediaType: s.MediaType, Digest: s.Digest, Size: s.Size})
			}
			w.children[d.Digest] = kids
		}
		stack = append(stack, kids...)
	}
	return reached, nil
}
