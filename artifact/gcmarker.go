package artifact

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

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
