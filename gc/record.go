package gc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// markRecord is what earlier collections found unreachable, and since
// when: the memory that lets the grace period span runs instead of a
// sleep (SPEC.md 10.3). It is trusted for times only: what is reachable
// is decided by each run's own mark and looks, so a record that lies
// can make a collection delete sooner (or later) than the grace period
// says, never delete what a root reaches.
type markRecord struct {
	// Marked is when the mark that wrote it ended.
	Marked      time.Time     `json:"marked"`
	Unreachable []recordEntry `json:"unreachable"`

	desc  ocispec.Descriptor // the manifest it was read from; zero if none
	index map[string]int
}

// recordEntry is one thing found unreachable: by kind, digest and the
// tags naming it then (StorePath for people reading it).
type recordEntry struct {
	Kind      string        `json:"kind"`
	Digest    digest.Digest `json:"digest"`
	Tags      []string      `json:"tags,omitempty"`
	StorePath string        `json:"storePath,omitempty"`
	Since     time.Time     `json:"since"`
}

func (e recordEntry) key() string { return itemKey(e.Kind, e.Digest, e.Tags) }

// newMarkRecord records items as unreachable since their Since.
func newMarkRecord(marked time.Time, items []Item) *markRecord {
	r := &markRecord{Marked: marked, Unreachable: []recordEntry{}}
	for _, it := range items {
		r.Unreachable = append(r.Unreachable, recordEntry{Kind: it.Kind, Digest: it.Digest, Tags: it.Tags, StorePath: it.StorePath, Since: it.Since})
	}
	slices.SortFunc(r.Unreachable, func(a, b recordEntry) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return strings.Compare(a.key(), b.key())
	})
	return r
}

// since is when an earlier mark found it unreachable under the tags it
// has now, if one did; a time after the record's own mark (clocks
// disagreeing, or a record not ours) does not count.
func (r *markRecord) since(it Item) (time.Time, bool) {
	if r == nil {
		return time.Time{}, false
	}
	if r.index == nil {
		r.index = make(map[string]int, len(r.Unreachable))
		for i, e := range r.Unreachable {
			r.index[e.key()] = i
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

// equal reports whether r and o record the same entries.
func (r *markRecord) equal(o *markRecord) bool {
	if len(r.Unreachable) != len(o.Unreachable) {
		return false
	}
	for i, e := range r.Unreachable {
		f := o.Unreachable[i]
		if e.key() != f.key() || !e.Since.Equal(f.Since) || !slices.Equal(e.Tags, f.Tags) {
			return false
		}
	}
	return true
}

// readMarkRecord reads the record the tag spec.GCMarkTag names; with
// none, or one that cannot be read (it is then replaced), the record is
// empty and every grace period starts now.
func readMarkRecord(ctx context.Context, t backend.Target) (*markRecord, error) {
	empty := &markRecord{}
	desc, data, err := backend.FetchManifest(ctx, t, spec.GCMarkTag)
	if errors.Is(err, errdef.ErrNotFound) {
		return empty, nil
	} else if err != nil {
		return nil, fmt.Errorf("reading the mark record (tag %s): %w", spec.GCMarkTag, err)
	}
	empty.desc = desc
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil || m.ArtifactType != spec.ArtifactTypeGCMarker ||
		len(m.Layers) != 1 || m.Layers[0].MediaType != spec.MediaTypeGCMark || m.Layers[0].Size > spec.GCMarkMaxSize {
		slog.Warn("the mark record tag names something else; grace periods start now", "tag", spec.GCMarkTag, "digest", desc.Digest)
		return empty, nil
	}
	blob, err := backend.FetchAll(ctx, t, m.Layers[0], spec.GCMarkMaxSize)
	if errors.Is(err, errdef.ErrNotFound) {
		return empty, nil
	} else if err != nil {
		return nil, fmt.Errorf("reading the mark record %s: %w", m.Layers[0].Digest, err)
	}
	r := &markRecord{desc: desc}
	if err := json.Unmarshal(blob, r); err != nil {
		slog.Warn("the mark record does not parse; grace periods start now", "digest", m.Layers[0].Digest, "err", err)
		return empty, nil
	}
	return r, nil
}

// markRecordManifest lays out the record r as stored: its JSON blob,
// and the manifest naming it.
func markRecordManifest(r *markRecord) (blob []byte, blobDesc ocispec.Descriptor, manifest []byte, desc ocispec.Descriptor, err error) {
	if blob, err = json.Marshal(r); err != nil {
		return
	}
	blobDesc = ocispec.Descriptor{MediaType: spec.MediaTypeGCMark, Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	manifest, err = json.Marshal(ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: spec.ArtifactTypeGCMarker,
		Config:       spec.EmptyConfig,
		Layers:       []ocispec.Descriptor{blobDesc},
		Annotations:  map[string]string{spec.AnnotationVersion: spec.Version, spec.AnnotationGCMarked: spec.FormatTime(r.Marked)},
	})
	desc = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: spec.ArtifactTypeGCMarker,
		Digest: digest.FromBytes(manifest), Size: int64(len(manifest))}
	return
}

// writeMarkRecord replaces the record old with r: tagged if r lists
// anything, else the tag removed; the replaced manifest is deleted (in
// an image layout the sweep takes its blobs).
func writeMarkRecord(ctx context.Context, t backend.Target, old, r *markRecord) error {
	had := old.desc.Digest != ""
	if !had && len(r.Unreachable) == 0 || had && old.equal(r) {
		return nil
	}
	if len(r.Unreachable) > 0 {
		blob, blobDesc, manifest, desc, err := markRecordManifest(r)
		if err != nil {
			return err
		}
		if err := backend.PushBytes(ctx, t, blobDesc, blob); err != nil {
			return fmt.Errorf("storing the mark record: %w", err)
		}
		if err := backend.PushBytes(ctx, t, spec.EmptyConfig, spec.EmptyConfigData); err != nil {
			return err
		}
		if err := t.PushReference(ctx, desc, bytes.NewReader(manifest), spec.GCMarkTag); err != nil {
			return fmt.Errorf("tagging the mark record (tag %s): %w", spec.GCMarkTag, err)
		}
		if !had || old.desc.Digest == desc.Digest {
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
