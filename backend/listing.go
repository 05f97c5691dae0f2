package backend

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// TagLister lists a target's tags page by page, in order (registries
// paginate with the distribution API's "last" parameter). Every Target
// implements it.
type TagLister = registry.TagLister

// Tags implements TagLister for a registry repository, streaming (see
// tagList): a repository of any number of tags is listed in bounded
// memory, whether or not the registry honours the page size asked for.
// A repository the registry does not know yet (404 NAME_UNKNOWN: nothing
// was pushed to it) has no tags.
func (r *remoteTarget) Tags(ctx context.Context, last string, fn func(tags []string) error) error {
	err := r.listTags(ctx, last, fn)
	var resp *errcode.ErrorResponse
	if errors.As(err, &resp) && resp.StatusCode == http.StatusNotFound && hasCode(resp.Errors, errcode.ErrorCodeNameUnknown) {
		return nil
	}
	return classify(ctx, r.name, "listing tags", err)
}

// Referrers implements ReferrerLister for a registry repository: the
// referrers API where the registry has it, else the referrers tag schema.
func (r *remoteTarget) Referrers(ctx context.Context, desc ocispec.Descriptor, artifactType string, fn func([]ocispec.Descriptor) error) error {
	return classify(ctx, r.name, "listing referrers of "+desc.Digest.String(), r.Repository.Referrers(ctx, desc, artifactType, fn))
}

// RemoteRepository reports the registry host and repository t speaks to,
// if t is a registry repository (for cross-repository blob mounts).
func RemoteRepository(t Target) (host, repository string, ok bool) {
	r, ok := t.(*remoteTarget)
	if !ok {
		return "", "", false
	}
	return r.Repository.Reference.Registry, r.Repository.Reference.Repository, true
}

// MountSource is the repository blobs copied from src to dst can be
// mounted from (the distribution API's cross-repository mount, no bytes
// sent): src's, when both are repositories of one registry.
func MountSource(src, dst Target) (repository string, ok bool) {
	srcHost, srcRepo, ok := RemoteRepository(src)
	if !ok {
		return "", false
	}
	dstHost, dstRepo, ok := RemoteRepository(dst)
	if !ok || srcHost != dstHost || srcRepo == dstRepo {
		return "", false
	}
	return srcRepo, true
}

// tagsURL is the tag list endpoint of r's repository.
func (r *remoteTarget) tagsURL() string {
	scheme := "https"
	if r.Repository.PlainHTTP {
		scheme = "http"
	}
	ref := r.Repository.Reference
	return fmt.Sprintf("%s://%s/v2/%s/tags/list", scheme, ref.Host(), ref.Repository)
}
