package gc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// markRecord is what earlier collections found unreachable, and since
// when: the memory that lets the grace period span collections instead
// of a sleep (SPEC.md 10.3). It is trusted for times only: what is
// reachable is decided by each collection's own mark and looks, so a
// record that is lost, stale or forged changes when garbage goes, never
// whether what a root reaches stays.
type markRecord struct {
	artifact.MarkRecord
	desc  ocispec.Descriptor // the manifest it was read from; zero if none
	index map[string]int
}

func entryKey(e artifact.MarkEntry) string { return itemKey(e.Kind, e.Digest, e.Tags) }

// newMarkRecord records items as unreachable since their Since.
func newMarkRecord(marked time.Time, items []Item) *markRecord {
	r := &markRecord{MarkRecord: artifact.MarkRecord{Marked: marked, Unreachable: []artifact.MarkEntry{}}}
	for _, it := range items {
		r.Unreachable = append(r.Unreachable, artifact.MarkEntry{Kind: it.Kind, Digest: it.Digest, Tags: it.Tags, StorePath: it.StorePath, Since: it.Since})
	}
	slices.SortFunc(r.Unreachable, func(a, b artifact.MarkEntry) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return strings.Compare(entryKey(a), entryKey(b))
	})
	return r
}

// since is when an earlier mark found it unreachable under the tags it
// has now, if one did; a time after the record's own mark (clocks
// disagreeing, or a record not ours) does not count.
func (r *markRecord) since(it Item) (time.Time, bool) {
	if r.index == nil {
		r.index = make(map[string]int, len(r.Unreachable))
		for i, e := range r.Unreachable {
			r.index[entryKey(e)] = i
		}
	}
	i, ok := r.index[it.key()]
	if !ok {
		return time.Time{}, false
	}
	e := r.Unreachable[i]
	for _, t := range it.Tags {
		if !slices.Contains(e.Tags, t) {
			return time.Time{}, false // a tag that came since: it waits its own grace period
		}
	}
	if e.Since.IsZero() || e.Since.After(r.Marked) {
		return time.Time{}, false
	}
	return e.Since, true
}

// sameEntries reports whether r and o record the same entries.
func (r *markRecord) sameEntries(o *markRecord) bool {
	return slices.EqualFunc(r.Unreachable, o.Unreachable, func(a, b artifact.MarkEntry) bool {
		return entryKey(a) == entryKey(b) && a.Since.Equal(b.Since) && slices.Equal(a.Tags, b.Tags)
	})
}

// readMarkRecord reads the record of t; with none, or one that is not a
// mark record, the record is empty and every grace period starts now.
// What the tag names then is not ours to delete: a new record takes the
// tag and leaves it.
func readMarkRecord(ctx context.Context, t backend.Target) (*markRecord, error) {
	r, desc, _, err := artifact.ReadMarkRecord(ctx, t)
	if errors.Is(err, artifact.ErrNotArtifact) {
		slog.Warn("the mark record cannot be read; grace periods start now", "tag", spec.GCMarkTag, "err", err)
		return &markRecord{}, nil
	} else if err != nil {
		return nil, err
	}
	return &markRecord{MarkRecord: r, desc: desc}, nil
}

// writeMarkRecord replaces the record old with r: tagged if r lists
// anything, else the tag removed. The replaced manifest is deleted (in
// an image layout the sweep takes its blobs).
func writeMarkRecord(ctx context.Context, t backend.Target, old, r *markRecord) error {
	had := old.desc.Digest != ""
	if !had && len(r.Unreachable) == 0 || had && old.sameEntries(r) {
		return nil
	}
	if len(r.Unreachable) > 0 {
		record, manifest, err := artifact.NewMarkRecord(r.MarkRecord)
		if err != nil {
			return err
		}
		if err := backend.PushBytes(ctx, t, record.Descriptor, record.Data); err != nil {
			return fmt.Errorf("storing the mark record: %w", err)
		}
		if err := backend.PushBytes(ctx, t, spec.EmptyConfig, spec.EmptyConfigData); err != nil {
			return err
		}
		if err := t.PushReference(ctx, manifest.Descriptor, bytes.NewReader(manifest.Data), spec.GCMarkTag); err != nil {
			return fmt.Errorf("tagging the mark record (tag %s): %w", spec.GCMarkTag, err)
		}
		if !had || old.desc.Digest == manifest.Descriptor.Digest {
			return nil
		}
	}
	switch d := t.(type) {
	case *backend.Layout:
		if len(r.Unreachable) > 0 {
			return nil // the tag moved; the old manifest is swept as any unreferenced blob
		}
		return d.Update(ctx, func(tx *backend.LayoutTx) error {
			tx.Untag(spec.GCMarkTag, old.desc.Digest)
			return nil
		})
	case backend.Deleter:
		if err := d.DeleteManifest(ctx, old.desc, nil); err != nil && !errors.Is(err, errdef.ErrNotFound) {
			return fmt.Errorf("deleting the replaced mark record %s: %w", old.desc.Digest, err)
		}
	}
	return nil
}
