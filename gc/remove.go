package gc

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
)

// RemoveOptions configure Remove. The zero value removes closure and
// image tags only.
type RemoveOptions struct {
	// Force removes tags naming anything, not only nixoci's closures and
	// images.
	Force bool
	// Jobs bounds concurrent requests; default 8.
	Jobs int
}

// Removed is one tag Remove removed.
type Removed struct {
	Tag        string             `json:"tag"`
	Kind       string             `json:"kind"` // "closure", "image" or "other"
	Descriptor ocispec.Descriptor `json:"descriptor"`
	// Deleted: no other tag named it, so the manifest went too (a
	// registry, with its push records); what it alone reached is left to
	// Collect.
	Deleted bool `json:"deleted"`
}

// Remove removes tags from t. Every tag is read first, and if any names
// something other than a nixoci closure or image (ErrNotOurs, unless
// opts.Force) or does not exist, nothing is removed. In an image layout
// only the tags go (Collect sweeps the rest). In a registry, a manifest
// no other tag names is deleted with its push records, since once
// untagged only its digest would find it; otherwise the tag alone goes.
func Remove(ctx context.Context, t backend.Target, tags []string, opts RemoveOptions) ([]Removed, error) {
	if opts.Jobs <= 0 {
		opts.Jobs = 8
	}
	del, isRegistry := t.(backend.Deleter)
	if isRegistry {
		if err := del.CheckDelete(ctx); err != nil {
			return nil, err
		}
	}
	rd := newReader(t)
	var out []Removed
	for _, tag := range tags {
		lk := newLook()
		desc, err := t.Resolve(ctx, tag)
		if err != nil {
			return nil, fmt.Errorf("tag %s: %w", tag, err)
		}
		n, err := rd.read(ctx, desc)
		if err != nil {
			return nil, fmt.Errorf("tag %s: %w", tag, err)
		}
		kind := "other"
		switch {
		case !lk.add(tag):
			// a store-path, layer or referrers tag, or the marker
		case n.kind == nodeClosure:
			kind = "closure"
		case n.kind == nodeImage:
			kind = "image"
		}
		if kind == "other" && !opts.Force {
			return nil, fmt.Errorf("tag %s names %s %s: %w (remove it with --force if you mean it)", tag, describe(n), desc.Digest, ErrNotOurs)
		}
		out = append(out, Removed{Tag: tag, Kind: kind, Descriptor: plain(desc)})
	}
	if l, ok := t.(*backend.Layout); ok {
		return out, l.Update(ctx, func(tx *backend.LayoutTx) error {
			for _, r := range out {
				tx.Untag(r.Tag, r.Descriptor.Digest)
			}
			return nil
		})
	}
	// Which of the manifests do other tags name?
	lk, err := lookAt(ctx, t, opts.Jobs, nil)
	if err != nil {
		return nil, err
	}
	named := map[digest.Digest]int{}
	for tag, d := range lk.named {
		if !slices.ContainsFunc(out, func(r Removed) bool { return r.Tag == tag }) {
			named[d.Digest]++
		}
	}
	for i, r := range out {
		if named[r.Descriptor.Digest] > 0 {
			if err := del.Untag(ctx, r.Tag, r.Descriptor.Digest); err != nil {
				return out[:i], fmt.Errorf("removing tag %s: %w", r.Tag, err)
			}
			continue
		}
		if err := deleteWithRecords(ctx, t, del, rd, r.Descriptor); err != nil {
			return out[:i], fmt.Errorf("removing tag %s: %w", r.Tag, err)
		}
		out[i].Deleted = true
	}
	return out, nil
}

// deleteWithRecords deletes a manifest, after its push records.
func deleteWithRecords(ctx context.Context, t backend.Target, del backend.Deleter, rd *reader, desc ocispec.Descriptor) error {
	records, err := artifact.PushRecords(ctx, t, desc)
	if err != nil {
		return err
	}
	for _, r := range records {
		if err := del.DeleteManifest(ctx, r.Descriptor, &desc); err != nil && !isNotFound(err) {
			return fmt.Errorf("deleting push record %s: %w", r.Descriptor.Digest, err)
		}
	}
	n := rd.nodes[desc.Digest]
	if err := del.DeleteManifest(ctx, desc, n.subject); err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

func describe(n *node) string {
	switch n.kind {
	case nodeClosure:
		return "a nixoci store path or closure"
	case nodeImage:
		return "a nixoci image"
	case nodeMarker, nodeTombstone:
		return "nixoci gc's own manifest"
	}
	if n.artifactType != "" {
		return "an artifact of type " + n.artifactType + ","
	}
	return "a " + n.desc.MediaType + ","
}

func isNotFound(err error) bool { return errors.Is(err, errdef.ErrNotFound) }
