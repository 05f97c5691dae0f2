package backend

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
)

// ReferrerLister lists the manifests whose subject is a given manifest
// (OCI 1.1 referrers). Every Target implements it: a registry through
// the referrers API or, where it has none (distribution 2.8), through the
// referrers tag schema, both as oras-go does; a Layout through the same
// tag schema, which its Push keeps.
type ReferrerLister = registry.ReferrerLister

// ReferrersTag is the tag of the referrers tag schema for manifests whose
// subject has digest d: "sha256-<hex>".
func ReferrersTag(d digest.Digest) string { return d.Algorithm().String() + "-" + d.Encoded() }

var _ ReferrerLister = (*Layout)(nil)

func isManifestType(mediaType string) bool {
	return mediaType == ocispec.MediaTypeImageManifest || mediaType == ocispec.MediaTypeImageIndex
}

// referrerFields are the parts of a manifest or index the referrers list
// repeats.
type referrerFields struct {
	ArtifactType string              `json:"artifactType"`
	Config       ocispec.Descriptor  `json:"config"`
	Subject      *ocispec.Descriptor `json:"subject"`
	Annotations  map[string]string   `json:"annotations"`
}

// pushManifest stores a manifest or index and, when it has a subject,
// lists it in the subject's referrers index (also when it was stored
// before, so a writer killed between the two is mended by the next).
func (l *Layout) pushManifest(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	data, err := io.ReadAll(io.LimitReader(r, MaxManifestRead+1))
	if err != nil {
		return err
	}
	if len(data) > MaxManifestRead {
		// Too large for nixoci to read back: stored, never a referrer.
		return l.storage.Push(ctx, desc, io.MultiReader(bytes.NewReader(data), r))
	}
	perr := l.storage.Push(ctx, desc, bytes.NewReader(data))
	if errors.Is(perr, errdef.ErrAlreadyExists) && !l.renew(desc.Digest) {
		perr = l.storage.Push(ctx, desc, bytes.NewReader(data))
	}
	if perr != nil && !errors.Is(perr, errdef.ErrAlreadyExists) {
		return perr
	}
	var f referrerFields
	if json.Unmarshal(data, &f) != nil || f.Subject == nil {
		return perr
	}
	entry := ocispec.Descriptor{MediaType: desc.MediaType, ArtifactType: f.ArtifactType, Digest: desc.Digest, Size: desc.Size, Annotations: f.Annotations}
	if entry.ArtifactType == "" && desc.MediaType == ocispec.MediaTypeImageManifest {
		entry.ArtifactType = f.Config.MediaType
	}
	if err := l.addReferrer(ctx, f.Subject.Digest, entry); err != nil {
		return fmt.Errorf("oci:%s: listing %s as a referrer of %s: %w", l.dir, desc.Digest, f.Subject.Digest, err)
	}
	return perr
}

// addReferrer adds entry to the referrers index of subject, under the
// writer lock.
func (l *Layout) addReferrer(ctx context.Context, subject digest.Digest, entry ocispec.Descriptor) error {
	unlock, err := l.lock()
	if err != nil {
		return err
	}
	defer unlock()
	tag := ReferrersTag(subject)
	list, err := l.referrersIndex(ctx, tag)
	if err != nil {
		return err
	}
	if slices.ContainsFunc(list, func(d ocispec.Descriptor) bool { return d.Digest == entry.Digest }) {
		return nil
	}
	list = append(list, entry)
	slices.SortFunc(list, func(a, b ocispec.Descriptor) int { return strings.Compare(a.Digest.String(), b.Digest.String()) })
	return l.writeReferrersIndex(ctx, tag, list)
}

// writeReferrersIndex stores list as the index tag names; the caller
// holds the lock. An empty list removes the tag.
func (l *Layout) writeReferrersIndex(ctx context.Context, tag string, list []ocispec.Descriptor) error {
	if len(list) == 0 {
		return l.updateIndex(func(byTag map[string]ocispec.Descriptor) error {
			delete(byTag, tag)
			return nil
		})
	}
	data, err := json.Marshal(newIndex(list))
	if err != nil {
		return err
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := l.storage.Push(ctx, desc, bytes.NewReader(data)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		return err
	}
	return l.updateIndex(func(byTag map[string]ocispec.Descriptor) error {
		desc.Annotations = map[string]string{ocispec.AnnotationRefName: tag}
		byTag[tag] = desc
		return nil
	})
}

// referrersIndex reads the referrers index tag names (empty if none).
func (l *Layout) referrersIndex(ctx context.Context, tag string) ([]ocispec.Descriptor, error) {
	list, err := ReadReferrersIndex(ctx, l, tag)
	if errors.Is(err, errdef.ErrNotFound) {
		return nil, nil
	}
	return list, err
}

// ReadReferrersIndex reads the entries of the referrers index that tag
// (of the referrers tag schema, see ReferrersTag) names; a missing tag is
// ErrNotFound.
func ReadReferrersIndex(ctx context.Context, f registry.ReferenceFetcher, tag string) ([]ocispec.Descriptor, error) {
	desc, data, err := FetchManifest(ctx, f, tag)
	if err != nil {
		return nil, err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("referrers index %s (%s): %w", tag, desc.Digest, err)
	}
	return idx.Manifests, nil
}

// Referrers implements ReferrerLister from the referrers tag schema.
func (l *Layout) Referrers(ctx context.Context, desc ocispec.Descriptor, artifactType string, fn func([]ocispec.Descriptor) error) error {
	list, err := l.referrersIndex(ctx, ReferrersTag(desc.Digest))
	if err != nil {
		return err
	}
	if artifactType != "" {
		list = slices.DeleteFunc(list, func(d ocispec.Descriptor) bool { return d.ArtifactType != artifactType })
	}
	if len(list) == 0 {
		return nil
	}
	return fn(list)
}
