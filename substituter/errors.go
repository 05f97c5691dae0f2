package substituter

import (
	"context"
	"errors"
	"net/http"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
)

// statusOf maps a backend failure to the status Nix should see. Nix caches
// 404, 403 and 410 as "not here" for an hour and retries 5xx, so a
// failure is never reported as absence.
func statusOf(err error) int {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, backend.ErrUnreachable):
		return http.StatusServiceUnavailable
	case errors.Is(err, artifact.ErrNotArtifact), errors.Is(err, artifact.ErrHashMismatch):
		// Something that is not ours sits under our tag: a server-side
		// problem, not absence.
		return http.StatusBadGateway
	default:
		return http.StatusBadGateway
	}
}

// fail answers a request whose backend work failed, and logs why.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, what string, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away
	}
	status := statusOf(err)
	s.log.Error("backend failure", "what", what, "status", status, "err", err)
	http.Error(w, http.StatusText(status)+": "+what+": backend failure", status)
}
