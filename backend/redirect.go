package backend

import (
	"context"
	"fmt"
	"net/http"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// BlobRedirector finds where a registry sends clients for a blob's bytes:
// registries backed by object storage (distribution with S3 or its
// redirect middleware, GHCR, ECR) answer a blob GET with a redirect to a
// short-lived URL of the storage. Registry targets implement it.
type BlobRedirector interface {
	// BlobRedirect returns the URL the registry redirects a GET of the
	// blob to, and false (with no error) if it sends the bytes itself.
	BlobRedirect(ctx context.Context, desc ocispec.Descriptor) (location string, redirected bool, err error)
}

var _ BlobRedirector = (*remoteTarget)(nil)

// BlobRedirect implements BlobRedirector: a GET of the blob with the
// repository's credentials that does not follow the redirect. A registry
// that answers with the bytes has them cut off unread.
func (r *remoteTarget) BlobRedirect(ctx context.Context, desc ocispec.Descriptor) (string, bool, error) {
	client, ok := r.Repository.Client.(*auth.Client)
	if !ok {
		return "", false, nil
	}
	noFollow := *client
	base := http.DefaultClient
	if client.Client != nil {
		base = client.Client
	}
	hc := *base
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	noFollow.Client = &hc

	ref := r.Repository.Reference
	scheme := "https"
	if r.Repository.PlainHTTP {
		scheme = "http"
	}
	u := fmt.Sprintf("%s://%s/v2/%s/blobs/%s", scheme, ref.Registry, ref.Repository, desc.Digest)
	var location string
	var redirected bool
	err := r.retry(ctx, "locating blob "+desc.Digest.String(), func(ctx context.Context) error {
		ctx = auth.AppendRepositoryScope(ctx, ref, auth.ActionPull)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		resp, err := noFollow.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
			loc, err := resp.Location()
			if err != nil {
				return fmt.Errorf("redirect without a usable Location: %w", err)
			}
			location, redirected = loc.String(), true
			return nil
		case http.StatusOK:
			return nil
		case http.StatusNotFound:
			return fmt.Errorf("blob %s: %w", desc.Digest, errdef.ErrNotFound)
		}
		return answerError(resp)
	})
	return location, redirected, err
}
