package backend

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/nixoci/nixoci/spec"
)

var (
	// ErrDeleteUnsupported: the registry does not delete manifests, as
	// distribution answers (405 UNSUPPORTED) when configured without
	// storage.delete.enabled.
	ErrDeleteUnsupported = errors.New("registry does not allow deleting manifests")
	// ErrTagMoved: a tag to be removed names another manifest than the
	// one it was to be removed from; it was left alone.
	ErrTagMoved = errors.New("tag names another manifest now")
)

// Deleter removes manifests and tags from a registry repository. The
// targets Open returns for registries implement it; image layouts change
// under their lock instead (Layout.Update).
type Deleter interface {
	// CheckDelete reports, without deleting anything, whether the
	// registry lets us delete: ErrDeleteUnsupported or ErrDenied if not.
	CheckDelete(ctx context.Context) error
	// DeleteManifest removes the manifest desc names and, as registries
	// do, every tag naming it. If the manifest has a subject, it is also
	// removed from the subject's referrers (the referrers tag schema is
	// kept as oras-go keeps it). A manifest already gone is ErrNotFound.
	DeleteManifest(ctx context.Context, desc ocispec.Descriptor, subject *ocispec.Descriptor) error
	// Untag removes tag if it names d (else ErrTagMoved), leaving the
	// manifest and its other tags: by the distribution API's tag delete
	// where the registry has it (distribution 3), else by pointing tag
	// at a tombstone manifest of its own and deleting that.
	Untag(ctx context.Context, tag string, d digest.Digest) error
}

var _ Deleter = (*remoteTarget)(nil)

// probeDigest names no manifest: deleting it tells whether deletes are
// allowed (404) or not (405), and changes nothing either way.
var probeDigest = digest.FromString("nixoci: does this registry allow deletes?")

// CheckDelete implements Deleter.
func (r *remoteTarget) CheckDelete(ctx context.Context) error {
	err := r.retry(ctx, "checking that deletes are allowed", func(ctx context.Context) error {
		return r.deleteReference(ctx, probeDigest.String())
	})
	switch {
	case err == nil, errors.Is(err, errdef.ErrNotFound):
		return nil
	case isUnsupported(err):
		return fmt.Errorf("%s: %w (for distribution, set storage.delete.enabled: true): %w", r.name, ErrDeleteUnsupported, err)
	}
	return err
}

// DeleteManifest implements Deleter.
func (r *remoteTarget) DeleteManifest(ctx context.Context, desc ocispec.Descriptor, subject *ocispec.Descriptor) error {
	return r.retry(ctx, "deleting "+desc.Digest.String(), func(ctx context.Context) error {
		if subject != nil {
			// oras-go reads the manifest again, updates the subject's
			// referrers index where the registry has no referrers API,
			// then deletes.
			return r.Repository.Manifests().Delete(ctx, desc)
		}
		return r.deleteReference(ctx, desc.Digest.String())
	})
}

// Untag implements Deleter.
func (r *remoteTarget) Untag(ctx context.Context, tag string, d digest.Digest) error {
	cur, err := r.Resolve(ctx, tag)
	if err != nil {
		return err
	}
	if cur.Digest != d {
		return fmt.Errorf("%s: tag %s names %s, not %s: %w", r.name, tag, cur.Digest, d, ErrTagMoved)
	}
	err = r.retry(ctx, "deleting tag "+tag, func(ctx context.Context) error {
		return r.deleteReference(ctx, tag)
	})
	if err == nil || errors.Is(err, errdef.ErrNotFound) {
		return nil
	}
	if !tagDeleteRefused(err) {
		return err
	}
	// distribution 2.8 deletes by digest only, and a digest with all its
	// tags: give the tag a manifest of its own, then delete that.
	desc, data, err := tombstone(tag)
	if err != nil {
		return err
	}
	if err := PushBytes(ctx, r, spec.EmptyConfig, spec.EmptyConfigData); err != nil {
		return err
	}
	if err := r.PushReference(ctx, desc, bytes.NewReader(data), tag); err != nil {
		return fmt.Errorf("%s: untagging %s: %w", r.name, tag, err)
	}
	if err := r.DeleteManifest(ctx, desc, nil); err != nil && !errors.Is(err, errdef.ErrNotFound) {
		return fmt.Errorf("%s: untagging %s: %w", r.name, tag, err)
	}
	return nil
}

// tombstone is a manifest used once, to take tag away from what it
// named: its time makes it unique, so deleting it removes no other tag.
func tombstone(tag string) (ocispec.Descriptor, []byte, error) {
	data, err := json.Marshal(ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: spec.ArtifactTypeGCMarker,
		Config:       spec.EmptyConfig,
		Layers:       spec.EmptyLayers(),
		Annotations: map[string]string{
			spec.AnnotationVersion:   spec.Version,
			spec.AnnotationTombstone: "true",
			spec.AnnotationTag:       tag,
			spec.AnnotationPushed:    spec.FormatTime(time.Now()),
		},
	})
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: spec.ArtifactTypeGCMarker,
		Digest: digest.FromBytes(data), Size: int64(len(data))}, data, nil
}

// deleteReference sends DELETE /v2/<name>/manifests/<reference>: 202 is
// success, 404 ErrNotFound, anything else an errcode.ErrorResponse.
func (r *remoteTarget) deleteReference(ctx context.Context, reference string) error {
	ref := r.Repository.Reference
	ref.Reference = reference
	ctx = auth.AppendRepositoryScope(ctx, ref, auth.ActionDelete)
	scheme := "https"
	if r.Repository.PlainHTTP {
		scheme = "http"
	}
	url := scheme + "://" + ref.Host() + "/v2/" + ref.Repository + "/manifests/" + reference
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, url, nil)
	if err != nil {
		return err
	}
	resp, err := r.Repository.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusAccepted, http.StatusOK:
		return nil
	case http.StatusNotFound:
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		return fmt.Errorf("%s: %w", reference, errdef.ErrNotFound)
	}
	var body struct {
		Errors errcode.Errors `json:"errors"`
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	json.Unmarshal(data, &body)
	return &errcode.ErrorResponse{Method: req.Method, URL: req.URL, StatusCode: resp.StatusCode, Errors: body.Errors}
}

func isUnsupported(err error) bool {
	var resp *errcode.ErrorResponse
	return errors.As(err, &resp) && (resp.StatusCode == http.StatusMethodNotAllowed || hasCode(resp.Errors, errcode.ErrorCodeUnsupported))
}

// tagDeleteRefused: the registry does not delete by tag (distribution
// 2.8 takes the tag for a digest: 400 DIGEST_INVALID).
func tagDeleteRefused(err error) bool {
	var resp *errcode.ErrorResponse
	return isUnsupported(err) || errors.As(err, &resp) && (resp.StatusCode == http.StatusBadRequest ||
		hasCode(resp.Errors, errcode.ErrorCodeDigestInvalid))
}

// IsTombstone reports whether annotations are those of a tombstone Untag
// left behind (when stopped between its two steps).
func IsTombstone(artifactType string, annotations map[string]string) bool {
	return artifactType == spec.ArtifactTypeGCMarker && annotations[spec.AnnotationTombstone] == "true"
}
