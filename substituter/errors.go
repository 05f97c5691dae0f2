package substituter

import (
	"context"
	"errors"
	"net/http"

	"github.com/nixoci/nixoci/internal/serving"
)

// statusOf maps a backend failure to the status Nix should see.
func statusOf(err error) int { return serving.StatusOf(err) }

// fail answers a request whose backend work failed, and logs why.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, what string, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away
	}
	status := s.handler.Failed(what, err)
	http.Error(w, http.StatusText(status)+": "+what+": backend failure", status)
}
