package substituter

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/nixoci/nixoci/internal/serving"
)

func (s *Server) serveNarInfo(w http.ResponseWriter, r *http.Request) {
	hash, ok := narinfoHash(r.PathValue("file"))
	if !ok {
		s.serveTopFile(w, r) // .ls and anything else
		return
	}
	e, err := s.lookupAndPrefetch(r.Context(), hash)
	if err != nil {
		s.fail(w, r, "narinfo "+hash, err)
		return
	}
	if e == nil {
		http.Error(w, "no such path", http.StatusNotFound)
		return
	}
	if s.ahead != nil && r.Method == http.MethodGet {
		s.ahead.narinfo(r, e.NAR)
	}
	h := w.Header()
	h["Content-Type"] = narinfoContentType
	h["Content-Length"] = []string{strconv.Itoa(len(e.text))}
	w.Write(e.text)
}

// lookupAndPrefetch finds the store path with hash part hash for Nix
// (nil if no source has it) and, if it was not cached, starts fetching
// what Nix will likely ask next (see prefetcher).
func (s *Server) lookupAndPrefetch(ctx context.Context, hash string) (*pathEntry, error) {
	if e, ok := s.resolver.cached(hash); ok {
		s.metrics.cache.Count(true)
		return e, nil
	}
	s.metrics.cache.Count(false)
	e, err := s.lookup(ctx, hash)
	if e != nil && s.prefetch != nil {
		s.prefetch.after(e, hash)
	}
	if e != nil && s.pull != nil {
		s.pull.closures.rootAsked(e)
	}
	return e, err
}

// lookup finds the store path with hash part hash: nil if no source has
// it.
func (s *Server) lookup(ctx context.Context, hash string) (*pathEntry, error) {
	e, shared, err := s.resolver.resolve(ctx, hash)
	if err != nil && !errors.Is(err, errNotFound) && shared {
		// The failure was another caller's, a prefetch started maybe
		// before the backend recovered: ask once more on our own.
		e, _, err = s.resolver.resolve(ctx, hash)
	}
	if errors.Is(err, errNotFound) {
		return nil, nil
	}
	return e, err
}

var narinfoContentType = []string{"text/x-nix-narinfo"}

func isNotFound(err error) bool { return serving.IsNotFound(err) }
