package substituter

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
)

// pathEntry is a store path as served: its artifact, which backend has
// it, and the narinfo text with the server's signatures added.
type pathEntry struct {
	art     artifact.PathArtifact
	backend int
	text    []byte
}

// narLocation is where a NAR blob is: which backend, and its descriptor.
type narLocation struct {
	backend int
	desc    ocispec.Descriptor
}

func (s *Server) serveNarInfo(w http.ResponseWriter, r *http.Request) {
	hash, ok := narinfoHash(r.PathValue("file"))
	if !ok {
		// .ls, log/, realisations and anything else: not stored here.
		http.NotFound(w, r)
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
	h := w.Header()
	h["Content-Type"] = narinfoContentType
	h["Content-Length"] = []string{strconv.Itoa(len(e.text))}
	w.Write(e.text)
}

// lookup finds the store path with hash part hash: nil if no backend has
// it. Concurrent lookups of one hash share one backend request.
func (s *Server) lookup(ctx context.Context, hash string) (*pathEntry, error) {
	if e, ok := s.narinfos.get(hash); ok {
		s.metrics.cache("narinfo", true)
		return e, nil
	}
	s.metrics.cache("narinfo", false)
	v, err, _ := s.flight.Do("narinfo/"+hash, func() (any, error) {
		// Detached from the first caller: others may wait on the result.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.BackendTimeout)
		defer cancel()
		e, err := s.fetchPath(ctx, hash)
		if err != nil {
			return nil, err
		}
		if e == nil {
			s.narinfos.put(hash, nil, s.opts.NegativeTTL)
		} else {
			s.narinfos.put(hash, e, s.opts.CacheTTL)
			s.nars.put(e.art.NAR.Digest.Encoded(), narLocation{e.backend, e.art.NAR}, s.opts.CacheTTL)
		}
		return e, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*pathEntry), nil
}

// fetchPath asks the backends in order. "Not found" from all of them is
// (nil, nil); any other failure, if no backend has the path, is an error.
func (s *Server) fetchPath(ctx context.Context, hash string) (*pathEntry, error) {
	art, i, found, err := askBackends(ctx, s, "narinfo", func(ctx context.Context, t backend.Target) (artifact.PathArtifact, error) {
		return artifact.FetchPathByHash(ctx, t, hash)
	})
	if !found {
		return nil, err
	}
	info := *art.Info
	for _, k := range s.opts.SignKeys {
		if err := info.AddSignature(k); err != nil {
			return nil, err
		}
	}
	text, err := info.Format()
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", s.opts.Backends[i].Name, hash, err)
	}
	return &pathEntry{art: art, backend: i, text: text}, nil
}

// askBackends asks each backend in order, one request within the bound
// on backend concurrency, timed as op, and returns the first answer with
// the backend's index. "Not found" everywhere is found false with a nil
// error; failures of backends that had no answer are joined in the error.
func askBackends[T any](ctx context.Context, s *Server, op string, ask func(context.Context, backend.Target) (T, error)) (v T, backend int, found bool, err error) {
	var errs []error
	for i, b := range s.opts.Backends {
		release, err := s.acquire(ctx)
		if err != nil {
			return v, 0, false, err
		}
		start := time.Now()
		got, err := ask(ctx, b.Target)
		release()
		s.metrics.observeBackend(op, start, err)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", b.Name, err))
			continue
		}
		return got, i, true, nil
	}
	return v, 0, false, errors.Join(errs...)
}

// locateNAR finds the backend holding the NAR blob with digest hex d: from
// the narinfos served before, else by asking each backend.
func (s *Server) locateNAR(ctx context.Context, d digest.Digest) (narLocation, bool, error) {
	if loc, ok := s.nars.get(d.Encoded()); ok {
		s.metrics.cache("nar", true)
		return loc, true, nil
	}
	s.metrics.cache("nar", false)
	ctx, cancel := context.WithTimeout(ctx, s.opts.BackendTimeout)
	defer cancel()
	desc, i, found, err := askBackends(ctx, s, "resolve_blob", func(ctx context.Context, t backend.Target) (ocispec.Descriptor, error) {
		return t.ResolveBlob(ctx, d)
	})
	if !found {
		return narLocation{}, false, err
	}
	loc := narLocation{i, desc}
	s.nars.put(d.Encoded(), loc, s.opts.CacheTTL)
	return loc, true, nil
}

var narinfoContentType = []string{"text/x-nix-narinfo"}

func isNotFound(err error) bool { return errors.Is(err, errdef.ErrNotFound) }
