package substituter

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/internal/serving"
)

// pathEntry is a store path as served: its artifact, which backend has
// it, and the narinfo text with the server's signatures added.
type pathEntry struct {
	art     artifact.PathArtifact
	backend int
	text    []byte
}

func (s *Server) serveNarInfo(w http.ResponseWriter, r *http.Request) {
	hash, ok := narinfoHash(r.PathValue("file"))
	if !ok {
		s.serveTopFile(w, r) // .ls and anything else
		return
	}
	e, err := s.lookup(r.Context(), hash)
	if err != nil {
		s.fail(w, r, "narinfo "+hash, err)
		return
	}
	if e == nil {
		http.Error(w, "no such path", http.StatusNotFound)
		return
	}
	if s.ahead != nil && r.Method == http.MethodGet {
		s.ahead.narinfo(r, serving.BlobLocation{Backend: e.backend, Desc: e.art.NAR})
	}
	h := w.Header()
	h["Content-Type"] = narinfoContentType
	h["Content-Length"] = []string{strconv.Itoa(len(e.text))}
	w.Write(e.text)
}

// lookup finds the store path with hash part hash for Nix: nil if no
// backend has it. Concurrent lookups of one hash share one backend
// request; a path not cached starts fetching what Nix will likely ask
// next (see prefetcher).
func (s *Server) lookup(ctx context.Context, hash string) (*pathEntry, error) {
	if e, ok := s.narinfos.Get(hash); ok {
		s.metrics.cache.Count(true)
		return e, nil
	}
	s.metrics.cache.Count(false)
	fetch := func(ctx context.Context) (*pathEntry, error) {
		e, err := s.fetchPath(ctx, hash)
		if e != nil || err != nil {
			return e, err
		}
		return s.catalogLookup(ctx, hash)
	}
	e, shared, err := s.fetchShared(ctx, hash, fetch)
	if err != nil && !errors.Is(err, errNotFound) && shared {
		// The failure was another caller's, a prefetch started maybe
		// before the backend recovered: ask once more on our own.
		e, _, err = s.fetchShared(ctx, hash, fetch)
	}
	if errors.Is(err, errNotFound) {
		return nil, nil
	}
	if err == nil && s.prefetch != nil {
		s.prefetch.after(e, hash)
	}
	return e, err
}

// errNotFound: no backend has the path.
var errNotFound = errors.New("not found")

// fetchShared runs fetch for hash once for all concurrent callers, Nix's
// requests and prefetches alike, detached from the first caller (others
// may wait on it), and caches the answer: found for CacheTTL, not found
// (errNotFound) for NegativeTTL. Failures are not cached. It reports
// whether the answer was shared with another caller.
func (s *Server) fetchShared(ctx context.Context, hash string, fetch func(context.Context) (*pathEntry, error)) (*pathEntry, bool, error) {
	v, err, shared := s.flight.Do("narinfo/"+hash, func() (any, error) {
		if e, ok := s.narinfos.Get(hash); ok {
			return e, nil // fetched while this caller waited to start
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.backends.Timeout())
		defer cancel()
		e, err := fetch(ctx)
		if err != nil {
			return nil, err
		}
		if e == nil {
			s.narinfos.Put(hash, nil, s.opts.NegativeTTL)
		} else {
			s.narinfos.Put(hash, e, s.opts.CacheTTL)
			s.backends.RememberBlob(e.backend, e.art.NAR)
		}
		return e, nil
	})
	if err != nil {
		return nil, shared, err
	}
	e := v.(*pathEntry)
	if e == nil {
		return nil, shared, errNotFound
	}
	return e, shared, nil
}

// fetchPath asks the backends in order by tag. "Not found" from all of
// them is (nil, nil); any other failure, if no backend has the path, is
// an error.
func (s *Server) fetchPath(ctx context.Context, hash string) (*pathEntry, error) {
	art, i, found, err := serving.Ask(ctx, s.backends, s.metrics.narinfo, func(ctx context.Context, t backend.Target) (artifact.PathArtifact, error) {
		return artifact.FetchPathByHash(ctx, t, hash)
	})
	if !found {
		return nil, err
	}
	return s.newEntry(art, i)
}

// newEntry renders the narinfo of art, found in backend i, with the
// server's signatures.
func (s *Server) newEntry(art artifact.PathArtifact, i int) (*pathEntry, error) {
	info := *art.Info
	for _, k := range s.opts.SignKeys {
		if err := info.AddSignature(k); err != nil {
			return nil, err
		}
	}
	text, err := info.Format()
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", s.backends.List()[i].Name, info.StorePath, err)
	}
	return &pathEntry{art: art, backend: i, text: text}, nil
}

var narinfoContentType = []string{"text/x-nix-narinfo"}

func isNotFound(err error) bool { return serving.IsNotFound(err) }
