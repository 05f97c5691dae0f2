package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// Conditions callers branch on. Errors from registries wrap one of these
// (and the original error), so errors.Is works and messages stay specific.
var (
	// ErrUnreachable: the registry could not be reached (refused, DNS,
	// timeout). Retrying later may help; it never means "not found".
	ErrUnreachable = errors.New("registry unreachable")
	// ErrUnauthorized: the registry refused our credentials or wants some.
	ErrUnauthorized = errors.New("registry refused authentication")
	// ErrDenied: authenticated, but not allowed.
	ErrDenied = errors.New("registry denied access")
	// ErrRegistry: the registry answered with a server error.
	ErrRegistry = errors.New("registry failed")
)

// IsTransient reports whether err is worth retrying later: the registry
// was unreachable, stalled, or failed on its side.
func IsTransient(err error) bool {
	return errors.Is(err, ErrUnreachable) || errors.Is(err, ErrRegistry) || errors.Is(err, ErrStalled) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.ErrUnexpectedEOF)
}

// classify wraps err from a registry with the condition it represents and
// the target's name.
func classify(ctx context.Context, name, op string, err error) error {
	if err == nil {
		return nil
	}
	var kind error
	var resp *errcode.ErrorResponse
	var netErr net.Error
	switch {
	case ctx.Err() != nil:
		// The caller gave up. (A transport timeout, such as net/http's
		// "timeout awaiting response headers", also matches
		// context.DeadlineExceeded, but is the registry's fault.)
		return fmt.Errorf("%s: %s: %w", name, op, err)
	case errors.Is(err, auth.ErrBasicCredentialNotFound):
		kind = ErrUnauthorized
	case errors.As(err, &resp):
		switch {
		case resp.StatusCode == http.StatusUnauthorized:
			kind = ErrUnauthorized
		case resp.StatusCode == http.StatusForbidden:
			kind = ErrDenied
		case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
			kind = ErrRegistry
		case resp.StatusCode == http.StatusBadRequest && hasCode(resp.Errors, errcode.ErrorCodeManifestBlobUnknown):
			// A manifest whose blobs were stored a moment ago: the
			// registry lost track of one (docker-registry 2.8 rewrites
			// its link files in place while another writer stores the
			// same blob). Storing again helps.
			kind = ErrRegistry
		}
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, ErrStalled), errors.As(err, &netErr):
		kind = ErrUnreachable
	}
	if kind == nil {
		return fmt.Errorf("%s: %s: %w", name, op, err)
	}
	hint := ""
	if kind == ErrUnauthorized {
		hint = " (log in with `oras login` or `docker login`, or set DOCKER_CONFIG)"
	}
	return fmt.Errorf("%s: %s: %w%s: %w", name, op, kind, hint, err)
}

// remoteTarget is a registry repository whose errors say which registry
// failed and how.
type remoteTarget struct {
	*remote.Repository
	name      string
	chunkSize int64 // see Options.ChunkSize; never 0
}

func (r *remoteTarget) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	rc, err := r.Repository.Fetch(ctx, desc)
	return rc, classify(ctx, r.name, "fetching "+desc.Digest.String(), err)
}

func (r *remoteTarget) Push(ctx context.Context, desc ocispec.Descriptor, content io.Reader) error {
	return classify(ctx, r.name, "pushing "+desc.Digest.String(), r.push(ctx, desc, content))
}

func (r *remoteTarget) Exists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	ok, err := r.Repository.Exists(ctx, desc)
	return ok, classify(ctx, r.name, "checking "+desc.Digest.String(), err)
}

func (r *remoteTarget) Resolve(ctx context.Context, reference string) (ocispec.Descriptor, error) {
	d, err := r.Repository.Resolve(ctx, reference)
	return d, classify(ctx, r.name, "resolving "+reference, err)
}

func (r *remoteTarget) Tag(ctx context.Context, desc ocispec.Descriptor, reference string) error {
	return classify(ctx, r.name, "tagging "+reference, r.Repository.Tag(ctx, desc, reference))
}

func (r *remoteTarget) PushReference(ctx context.Context, desc ocispec.Descriptor, content io.Reader, reference string) error {
	return classify(ctx, r.name, "pushing manifest "+reference, r.Repository.PushReference(ctx, desc, content, reference))
}

func (r *remoteTarget) FetchReference(ctx context.Context, reference string) (ocispec.Descriptor, io.ReadCloser, error) {
	d, rc, err := r.Repository.FetchReference(ctx, reference)
	return d, rc, classify(ctx, r.name, "fetching "+reference, err)
}

// String names the target.
func (r *remoteTarget) String() string { return r.name }

func hasCode(errs errcode.Errors, code string) bool {
	for _, e := range errs {
		if e.Code == code {
			return true
		}
	}
	return false
}
