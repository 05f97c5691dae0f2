package artifact

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// GCMarker is what the tag spec.GCMarkerTag names: when the last
// garbage collector started deleting and, once done, when it finished
// (SPEC.md section 10.3).
type GCMarker struct {
	Descriptor ocispec.Descriptor
	Started    time.Time
	Finished   time.Time // zero while the collector runs
}

// Running reports whether the marker is a running collector's, not one
// left by a collector that died more than spec.GCMarkerMaxAge ago.
func (m GCMarker) Running(now time.Time) bool {
	return m.Finished.IsZero() && now.Sub(m.Started) < spec.GCMarkerMaxAge
}

// NewGCMarker lays out a marker: running if finished is zero.
func NewGCMarker(started, finished time.Time) (Blob, error) {
	a := map[string]string{spec.AnnotationVersion: spec.Version, spec.AnnotationGCStarted: spec.FormatTime(started)}
	if !finished.IsZero() {
		a[spec.AnnotationGCFinished] = spec.FormatTime(finished)
	}
	data, desc, err := marshalManifest(ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: spec.ArtifactTypeGCMarker,
		Config:       spec.EmptyConfig,
		Layers:       spec.EmptyLayers(),
		Annotations:  a,
	})
	return Blob{desc, data}, err
}

// ReadGCMarker reads the marker of t; ok is false if there is none.
func ReadGCMarker(ctx context.Context, t backend.Target) (m GCMarker, ok bool, err error) {
	desc, data, err := backend.FetchManifest(ctx, t, spec.GCMarkerTag)
	if errors.Is(err, errdef.ErrNotFound) {
		return GCMarker{}, false, nil
	}
	if err != nil {
		return GCMarker{}, false, fmt.Errorf("reading the %s tag: %w", spec.GCMarkerTag, err)
	}
	var mf ocispec.Manifest
	if err := json.Unmarshal(data, &mf); err != nil || mf.ArtifactType != spec.ArtifactTypeGCMarker {
		return GCMarker{}, false, fmt.Errorf("tag %s names %s, which is not a gc marker: %w", spec.GCMarkerTag, desc.Digest, ErrNotArtifact)
	}
	m.Descriptor = desc
	if m.Started, err = spec.ParseTime(mf.Annotations[spec.AnnotationGCStarted]); err != nil {
		return GCMarker{}, false, fmt.Errorf("gc marker %s: %s: %w", desc.Digest, spec.AnnotationGCStarted, ErrNotArtifact)
	}
	if f, ok := mf.Annotations[spec.AnnotationGCFinished]; ok {
		if m.Finished, err = spec.ParseTime(f); err != nil {
			return GCMarker{}, false, fmt.Errorf("gc marker %s: %s: %w", desc.Digest, spec.AnnotationGCFinished, ErrNotArtifact)
		}
	}
	return m, true, nil
}

// MarkRecord is what the tag spec.GCMarkTag names: what collections
// found unreachable, and since when (SPEC.md section 10.3). Collections
// trust it for times only.
type MarkRecord struct {
	// Marked is when the mark that wrote it ended.
	Marked      time.Time   `json:"marked"`
	Unreachable []MarkEntry `json:"unreachable"`
}

// MarkEntry is one thing a mark found unreachable: by kind (as package
// gc names them), digest and the tags naming it then; StorePath is for
// people reading it.
type MarkEntry struct {
	Kind      string        `json:"kind"`
	Digest    digest.Digest `json:"digest"`
	Tags      []string      `json:"tags,omitempty"`
	StorePath string        `json:"storePath,omitempty"`
	Since     time.Time     `json:"since"`
}

// NewMarkRecord lays out r as stored: its JSON blob, and the manifest
// naming it.
func NewMarkRecord(r MarkRecord) (record, manifest Blob, err error) {
	if record.Data, err = json.Marshal(r); err != nil {
		return
	}
	record.Descriptor = ocispec.Descriptor{MediaType: spec.MediaTypeGCMark, Digest: digest.FromBytes(record.Data), Size: int64(len(record.Data))}
	manifest.Data, manifest.Descriptor, err = marshalManifest(ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: spec.ArtifactTypeGCMarker,
		Config:       spec.EmptyConfig,
		Layers:       []ocispec.Descriptor{record.Descriptor},
		Annotations:  map[string]string{spec.AnnotationVersion: spec.Version, spec.AnnotationGCMarked: spec.FormatTime(r.Marked)},
	})
	return
}

// ReadMarkRecord reads the mark record of t and the manifest it came
// from. With none, ok is false; one that is not a mark record, or does
// not parse, is ErrNotArtifact (with its manifest's descriptor, so that
// it can be replaced).
func ReadMarkRecord(ctx context.Context, t backend.Target) (r MarkRecord, desc ocispec.Descriptor, ok bool, err error) {
	desc, data, err := backend.FetchManifest(ctx, t, spec.GCMarkTag)
	if errors.Is(err, errdef.ErrNotFound) {
		return MarkRecord{}, ocispec.Descriptor{}, false, nil
	} else if err != nil {
		return MarkRecord{}, ocispec.Descriptor{}, false, fmt.Errorf("reading the mark record (tag %s): %w", spec.GCMarkTag, err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil || m.ArtifactType != spec.ArtifactTypeGCMarker ||
		len(m.Layers) != 1 || m.Layers[0].MediaType != spec.MediaTypeGCMark || m.Layers[0].Size > spec.GCMarkMaxSize {
		return MarkRecord{}, desc, true, fmt.Errorf("tag %s names %s, which is not a mark record: %w", spec.GCMarkTag, desc.Digest, ErrNotArtifact)
	}
	blob, err := backend.FetchAll(ctx, t, m.Layers[0], spec.GCMarkMaxSize)
	if err != nil {
		return MarkRecord{}, desc, true, fmt.Errorf("reading the mark record %s: %w", m.Layers[0].Digest, err)
	}
	if err := json.Unmarshal(blob, &r); err != nil {
		return MarkRecord{}, desc, true, fmt.Errorf("mark record %s: %v: %w", m.Layers[0].Digest, err, ErrNotArtifact)
	}
	return r, desc, true, nil
}
