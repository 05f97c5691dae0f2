package serving

import (
	"context"
	"errors"
	"net/http"

	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
)

// StatusOf maps a backend failure to the status a client should see.
// Nix caches 404, 403 and 410 as "not here" for an hour and retries 5xx,
// so a failure is never reported as absence.
func StatusOf(err error) int {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, backend.ErrUnreachable):
		return http.StatusServiceUnavailable
	case errors.Is(err, artifact.ErrNotArtifact), errors.Is(err, artifact.ErrHashMismatch),
		errors.Is(err, artifact.ErrClaimMismatch), errors.Is(err, artifact.ErrTooLarge):
		// Something that is not ours, or not what it claims, sits under
		// our tag: a server-side problem, not absence.
		return http.StatusBadGateway
	default:
		return http.StatusBadGateway
	}
}

// IsNotFound reports whether err says a backend lacks what was asked for.
func IsNotFound(err error) bool { return errors.Is(err, errdef.ErrNotFound) }
