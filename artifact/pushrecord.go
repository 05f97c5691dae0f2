package artifact

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// RecordOptions say what a push record holds besides the time and tag.
type RecordOptions struct {
	// Tool names the writer; default "nixoci".
	Tool string
	// Host, if not empty, is recorded as the pushing host.
	Host string
	// At is the time recorded; default the time of the push. (Tests set
	// it: the record is the one thing a push writes that depends on time.)
	At time.Time
}

// PushRecord is one push of a closure as its push record tells it
// (SPEC.md section 10.1).
type PushRecord struct {
	Descriptor ocispec.Descriptor // the record's manifest
	Pushed     time.Time
	Tag        string
	Tool       string
	Host       string
}

// NewPushRecord lays out the push record of the closure whose top
// manifest or index is closure, pushed as tag at the time at.
func NewPushRecord(closure ocispec.Descriptor, tag string, at time.Time, opts RecordOptions) (Blob, error) {
	if opts.Tool == "" {
		opts.Tool = "nixoci"
	}
	a := map[string]string{
		spec.AnnotationVersion: spec.Version,
		spec.AnnotationPushed:  spec.FormatTime(at),
		spec.AnnotationTag:     tag,
		spec.AnnotationTool:    opts.Tool,
	}
	if opts.Host != "" {
		a[spec.AnnotationHost] = opts.Host
	}
	data, desc, err := marshalManifest(ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: spec.ArtifactTypePushRecord,
		Config:       spec.EmptyConfig,
		Layers:       spec.EmptyLayers(),
		Subject:      &ocispec.Descriptor{MediaType: closure.MediaType, Digest: closure.Digest, Size: closure.Size},
		Annotations:  a,
	})
	return Blob{desc, data}, err
}

// StorePushRecord stores a push record of closure, tagged tag, made at
// opts.At (default now), in dst, which holds the closure. It is not
// tagged: readers find it among the closure's referrers.
func StorePushRecord(ctx context.Context, dst backend.Target, closure ocispec.Descriptor, tag string, opts RecordOptions) (ocispec.Descriptor, error) {
	at := opts.At
	if at.IsZero() {
		at = time.Now()
	}
	rec, err := NewPushRecord(closure, tag, at, opts)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	// The empty config it names is stored: every path manifest of the
	// closure names it too.
	if err := dst.Push(ctx, rec.Descriptor, bytes.NewReader(rec.Data)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		return ocispec.Descriptor{}, fmt.Errorf("storing the push record of %s: %w", tag, err)
	}
	return rec.Descriptor, nil
}

// PushRecords lists the push records of the closure desc names, newest
// first, from its referrers (their annotations: no record is fetched).
// Entries whose time does not parse are left out.
func PushRecords(ctx context.Context, t backend.Target, closure ocispec.Descriptor) ([]PushRecord, error) {
	var out []PushRecord
	err := t.Referrers(ctx, closure, spec.ArtifactTypePushRecord, func(refs []ocispec.Descriptor) error {
		for _, d := range refs {
			if r, ok := ParsePushRecord(d); ok {
				out = append(out, r)
			}
		}
		return nil
	})
	if errors.Is(err, errdef.ErrNotFound) {
		err = nil
	}
	slices.SortFunc(out, func(a, b PushRecord) int { return b.Pushed.Compare(a.Pushed) })
	return out, err
}

// ParsePushRecord reads a push record from its referrers entry (a
// descriptor carrying the record's artifact type and annotations).
func ParsePushRecord(d ocispec.Descriptor) (PushRecord, bool) {
	if d.ArtifactType != spec.ArtifactTypePushRecord {
		return PushRecord{}, false
	}
	at, err := spec.ParseTime(d.Annotations[spec.AnnotationPushed])
	if err != nil {
		return PushRecord{}, false
	}
	plain := ocispec.Descriptor{MediaType: d.MediaType, ArtifactType: d.ArtifactType, Digest: d.Digest, Size: d.Size}
	return PushRecord{Descriptor: plain, Pushed: at, Tag: d.Annotations[spec.AnnotationTag],
		Tool: d.Annotations[spec.AnnotationTool], Host: d.Annotations[spec.AnnotationHost]}, true
}
