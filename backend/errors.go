package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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

// IsTransient reports whether err is worth retrying later: the server was
// unreachable (refused, reset, timed out), stalled, cut a body short, or
// failed on its side (ErrRegistry, or a StatusError of 408, 429 or 5xx).
func IsTransient(err error) bool {
	var status *StatusError
	var netErr net.Error
	switch {
	case errors.Is(err, ErrUnreachable), errors.Is(err, ErrRegistry), errors.Is(err, ErrStalled),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	case errors.As(err, &status):
		return transientStatus(status.StatusCode)
	case errors.As(err, &netErr):
		return netErr.Timeout()
	}
	return false
}

func transientStatus(code int) bool {
	return code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout
}

// StatusError is an HTTP answer other than the one asked for from a
// server that is not a registry (a binary cache); IsTransient holds for
// 408, 429 and 5xx.
type StatusError struct {
	StatusCode int
	Status     string // e.g. "503 Service Unavailable"
}

func (e *StatusError) Error() string { return "HTTP " + e.Status }

// classify wraps err from a registry with the condition it represents and
// the target's name.
func classify(ctx context.Context, name, op string, err error) error {
	if err == nil {
		return nil
	}
	err = RedactError(err)
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
		case transientStatus(resp.StatusCode):
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
// failed and how, and whose operations are retried (see RetryAttempts).
type remoteTarget struct {
	*remote.Repository
	name      string
	chunkSize int64 // see Options.ChunkSize; never 0
}

// retry runs one operation on the registry, classifying its errors.
func (r *remoteTarget) retry(ctx context.Context, op string, f func(ctx context.Context) error) error {
	return Retry(ctx, r.name+": "+op, func(ctx context.Context) error {
		return classify(ctx, r.name, op, f(ctx))
	})
}

// retryUpload is retry for an operation that sends content: it is tried
// again only if content can be rewound (an io.Seeker).
func (r *remoteTarget) retryUpload(ctx context.Context, op string, content io.Reader, f func(ctx context.Context, content io.Reader) error) error {
	rewind := rewinder(content)
	rt := newRetrier(r.name + ": " + op)
	actx := rt.attemptContext(ctx)
	for {
		err := classify(ctx, r.name, op, f(actx, content))
		if err == nil || rewind == nil || !rt.again(ctx, err) {
			return err
		}
		if rerr := rewind(); rerr != nil {
			return err
		}
	}
}

// rewinder returns a function that moves content back to where it is now,
// or nil if content cannot seek.
func rewinder(content io.Reader) func() error {
	s, ok := content.(io.Seeker)
	if !ok {
		return nil
	}
	start, err := s.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil
	}
	return func() error {
		_, err := s.Seek(start, io.SeekStart)
		return err
	}
}

// fetch opens content with open, retried, and returns its descriptor
// (which open may resolve, as FetchReference does) and a body that resumes
// after transient failures (resumingBody), drawing on the same attempts.
func (r *remoteTarget) fetch(ctx context.Context, op string, open func(ctx context.Context) (ocispec.Descriptor, io.ReadCloser, error)) (ocispec.Descriptor, io.ReadCloser, error) {
	rt := newRetrier(r.name + ": " + op)
	actx := rt.attemptContext(ctx)
	fail := func(err error) error { return classify(ctx, r.name, op, err) }
	for {
		desc, rc, err := open(actx)
		if err == nil {
			reopen := func(ctx context.Context, offset int64) (io.ReadCloser, error) {
				rc, err := r.Repository.Fetch(ctx, desc)
				if err != nil {
					return nil, err
				}
				return SkipTo(rc, offset)
			}
			return desc, newResumingBody(actx, rt, desc.Size, rc, reopen, fail), nil
		}
		err = fail(err)
		if !rt.again(ctx, err) {
			return desc, nil, err
		}
	}
}

func (r *remoteTarget) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	_, rc, err := r.fetch(ctx, "fetching "+desc.Digest.String(), func(ctx context.Context) (ocispec.Descriptor, io.ReadCloser, error) {
		rc, err := r.Repository.Fetch(ctx, desc)
		return desc, rc, err
	})
	return rc, err
}

func (r *remoteTarget) FetchReference(ctx context.Context, reference string) (ocispec.Descriptor, io.ReadCloser, error) {
	return r.fetch(ctx, "fetching "+reference, func(ctx context.Context) (ocispec.Descriptor, io.ReadCloser, error) {
		return r.Repository.FetchReference(ctx, reference)
	})
}

func (r *remoteTarget) Push(ctx context.Context, desc ocispec.Descriptor, content io.Reader) error {
	return r.retryUpload(ctx, "pushing "+desc.Digest.String(), content, func(ctx context.Context, content io.Reader) error {
		return r.keptDangling(desc, r.push(ctx, desc, content))
	})
}

func (r *remoteTarget) PushReference(ctx context.Context, desc ocispec.Descriptor, content io.Reader, reference string) error {
	return r.retryUpload(ctx, "pushing manifest "+reference, content, func(ctx context.Context, content io.Reader) error {
		return r.keptDangling(desc, r.Repository.PushReference(ctx, desc, content, reference))
	})
}

// keptDangling returns err unless it is oras-go failing to delete the
// referrers index that the push of a manifest with a subject replaced
// (referrers tag schema): by then the manifest is stored and the new
// index tagged, so the push succeeded. Registries that refuse deletes
// (distribution's default) answer that on every such push; the old index
// stays behind untagged, as the registry's own garbage collection would
// find it.
func (r *remoteTarget) keptDangling(desc ocispec.Descriptor, err error) error {
	var re *remote.ReferrersError
	if err != nil && errors.As(err, &re) && re.IsReferrersIndexDelete() {
		slog.Debug("the replaced referrers index stays (the registry refused to delete it)", "registry", r.name, "manifest", desc.Digest, "err", err)
		return nil
	}
	return err
}

func (r *remoteTarget) Exists(ctx context.Context, desc ocispec.Descriptor) (ok bool, err error) {
	err = r.retry(ctx, "checking "+desc.Digest.String(), func(ctx context.Context) (err error) {
		ok, err = r.Repository.Exists(ctx, desc)
		return err
	})
	return ok, err
}

func (r *remoteTarget) Resolve(ctx context.Context, reference string) (d ocispec.Descriptor, err error) {
	err = r.retry(ctx, "resolving "+reference, func(ctx context.Context) (err error) {
		d, err = r.Repository.Resolve(ctx, reference)
		return err
	})
	return d, err
}

func (r *remoteTarget) Tag(ctx context.Context, desc ocispec.Descriptor, reference string) error {
	return r.retry(ctx, "tagging "+reference, func(ctx context.Context) error {
		return r.Repository.Tag(ctx, desc, reference)
	})
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
