package substituter

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/catalog"
	"github.com/nixoci/nixoci/codec"
	"github.com/nixoci/nixoci/internal/serving"
)

// Binary-cache files besides narinfos and NARs (SPEC.md section 12):
// build logs (log.go), realisations (realisation.go), NAR listings
// (listing.go) and the debug-info index (debuginfo.go). Each is a file
// artifact found by its tag; this file holds what they share.

// routeFiles adds their routes; GET routes answer HEAD too. Listings
// (`<hash>.ls`) share the top-level routes of narinfos.
func (s *Server) routeFiles(mux *http.ServeMux) {
	mux.HandleFunc("GET /log/{file}", s.serveLog)
	mux.HandleFunc("PUT /log/{file}", s.putFile("log", (*uploader).putLog))
	mux.HandleFunc("GET /realisations/{file}", s.serveRealisation)
	mux.HandleFunc("PUT /realisations/{file}", s.putFile("realisation", (*uploader).putRealisation))
	mux.HandleFunc("GET /build-trace-v2/{drv}/{file}", s.serveBuildTrace)
	mux.HandleFunc("PUT /build-trace-v2/{drv}/{file}", s.putFile("realisation", (*uploader).putBuildTrace))
	mux.HandleFunc("GET /debuginfo/{file}", s.serveDebugInfo)
	mux.HandleFunc("PUT /debuginfo/{file}", s.putFile("debuginfo", (*uploader).putDebugInfo))
}

// fileRoute names the metrics route of a path of these files, or "".
func fileRoute(p string) string {
	switch {
	case strings.HasPrefix(p, "/log/"):
		return "log"
	case strings.HasPrefix(p, "/realisations/"), strings.HasPrefix(p, "/build-trace-v2/"):
		return "realisation"
	case strings.HasPrefix(p, "/debuginfo/"):
		return "debuginfo"
	case strings.HasSuffix(p, ".ls") && strings.Count(p, "/") == 1:
		return "listing"
	}
	return ""
}

// serveTopFile answers GET and HEAD of a top-level file that is not a
// narinfo.
func (s *Server) serveTopFile(w http.ResponseWriter, r *http.Request) {
	if hash, ok := strings.CutSuffix(r.PathValue("file"), ".ls"); ok {
		s.serveListing(w, r, hash)
		return
	}
	http.NotFound(w, r)
}

// putFile makes the handler of an upload of kind.
func (s *Server) putFile(kind string, put func(*uploader, *http.Request) (int, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u, ok := s.admit(w, r)
		if !ok {
			return
		}
		status, err := put(u, r)
		s.answerUpload(w, r, kind, status, err)
	}
}

// fileEntry is a file artifact as found: which backend has it.
type fileEntry struct {
	fa      *artifact.FileArtifact
	backend int
}

// findFile finds the file artifact of type artifactType tagged tag in
// the backends, in order: nil if none has it. Answers are cached as
// narinfos are (found for CacheTTL, not found for NegativeTTL), and
// concurrent lookups of one tag share one backend request.
func (s *Server) findFile(ctx context.Context, tag, artifactType string) (*fileEntry, error) {
	if e, ok := s.files.Get(tag); ok {
		return e, nil
	}
	v, err, _ := s.flight.Do("file/"+tag, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.backends.Timeout())
		defer cancel()
		fa, i, found, err := serving.Ask(ctx, s.backends, s.metrics.narinfo, func(ctx context.Context, t backend.Target) (*artifact.FileArtifact, error) {
			return artifact.FetchFileArtifact(ctx, t, tag, artifactType)
		})
		if !found {
			if err != nil {
				return nil, err
			}
			e, err := s.fileFromCatalogs(ctx, tag, artifactType)
			if err != nil {
				return nil, err
			}
			ttl := s.opts.CacheTTL
			if e == nil {
				ttl = s.opts.NegativeTTL
			}
			s.files.Put(tag, e, ttl)
			return e, nil
		}
		e := &fileEntry{fa: fa, backend: i}
		s.files.Put(tag, e, s.opts.CacheTTL)
		return e, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*fileEntry), nil
}

// fileFromCatalogs finds the file artifact tagged tag through the
// closures listing files (SPEC.md section 12.6) that the catalogs read:
// how a closure copied by OCI tools, which carry no file tags, has its
// files served. nil if none lists it; an error if a catalog that lists
// its target's closures could not read them all, or a closure names a
// manifest that is gone or is not the file its tag says.
func (s *Server) fileFromCatalogs(ctx context.Context, tag, artifactType string) (*fileEntry, error) {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: waiting for the closures of the backends to be read: %w", tag, ctx.Err())
	}
	listed := s.opts.CatalogInterval >= 0
	var errs []error
	for i, cat := range s.catalogs {
		d, err := cat.File(tag)
		if isNotFound(err) || errors.Is(err, catalog.ErrIncomplete) && !listed {
			continue
		} else if err != nil {
			errs = append(errs, err)
			continue
		}
		fa, err := serving.AskOne(ctx, s.backends, i, s.metrics.narinfo, func(ctx context.Context, t backend.Target) (*artifact.FileArtifact, error) {
			data, err := backend.FetchAll(ctx, t, d, backend.MaxManifestRead)
			if err != nil {
				return nil, err
			}
			return artifact.ParseFileArtifact(d, data, artifactType)
		})
		switch {
		case isNotFound(err):
			errs = append(errs, fmt.Errorf("a closure lists %s as manifest %s, which is gone: %v", tag, d.Digest, err))
		case err != nil:
			errs = append(errs, err)
		case !artifact.FileFitsTag(fa, tag):
			errs = append(errs, fmt.Errorf("a closure lists manifest %s as %s, which it is not: %w", d.Digest, tag, artifact.ErrNotArtifact))
		default:
			return &fileEntry{fa: fa, backend: i}, nil
		}
	}
	return nil, errors.Join(errs...)
}

// sendFile streams the file f of e (verified against its digest as it
// goes) with contentType, compressed for clients that accept zstd or
// gzip when worth it, plain to all others (Nix included: it sends no
// Accept-Encoding).
func (s *Server) sendFile(w http.ResponseWriter, r *http.Request, e *fileEntry, f artifact.File, contentType string) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Vary", "Accept-Encoding")
	loc := serving.BlobLocation{Backend: e.backend, Desc: f.Descriptor()}
	enc := acceptedEncoding(r, f.Size)
	if r.Method == http.MethodHead {
		if enc == "" {
			h.Set("Content-Length", strconv.FormatInt(f.Size, 10))
		} else {
			h.Set("Content-Encoding", enc)
		}
		return
	}
	rc, err := s.backends.OpenBlob(r.Context(), loc)
	if err != nil {
		s.fail(w, r, f.Title, err)
		return
	}
	defer rc.Close()
	if enc == "" {
		if err := s.backends.ServeBlob(w, r, loc, rc, nil); err != nil {
			s.log.Error("corrupt blob served truncated", "file", f.Title, "digest", f.Digest.String(), "err", err)
		}
		return
	}
	vr, err := backend.VerifyReader(rc, loc.Desc)
	if err != nil {
		s.fail(w, r, f.Title, err)
		return
	}
	s.sendCompressed(w, vr, enc, f.Title)
}

// sendBytes answers with data, rendered here, compressed as sendFile
// does.
func (s *Server) sendBytes(w http.ResponseWriter, r *http.Request, data []byte, contentType string) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Vary", "Accept-Encoding")
	enc := acceptedEncoding(r, int64(len(data)))
	if enc == "" {
		h.Set("Content-Length", strconv.Itoa(len(data)))
		if r.Method != http.MethodHead {
			w.Write(data)
		}
		return
	}
	h.Set("Content-Encoding", enc)
	if r.Method != http.MethodHead {
		s.sendCompressed(w, strings.NewReader(string(data)), enc, r.URL.Path)
	}
}

// sendCompressed writes src compressed with enc. A source that fails
// midway (a corrupt blob) cuts the response short, so that the client
// sees an error rather than a complete-looking file.
func (s *Server) sendCompressed(w http.ResponseWriter, src io.Reader, enc, what string) {
	w.Header().Set("Content-Encoding", enc)
	w.Header().Del("Content-Length")
	var zw io.WriteCloser
	if enc == "zstd" {
		zw, _ = zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(1<<20))
	} else {
		zw, _ = gzip.NewWriterLevel(w, gzip.BestSpeed)
	}
	if _, err := io.Copy(zw, src); err != nil {
		s.log.Error("file served truncated", "file", what, "err", err)
		panic(http.ErrAbortHandler)
	}
	zw.Close()
}

// acceptedEncoding picks the compression of an answer of size bytes:
// zstd or gzip if the client lists it (with a non-zero q), for answers
// large enough to gain from it; "" for identity.
func acceptedEncoding(r *http.Request, size int64) string {
	if size < 1024 {
		return ""
	}
	accepted := map[string]bool{}
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
		if q == "q=0" || q == "q=0.0" || q == "q=0.00" || q == "q=0.000" {
			continue
		}
		accepted[strings.ToLower(strings.TrimSpace(name))] = true
	}
	for _, enc := range []string{"zstd", "gzip"} {
		if accepted[enc] {
			return enc
		}
	}
	return ""
}

// body returns the request's body decoded from its Content-Encoding (Nix
// 2.32 and later send narinfos, listings and logs compressed when told
// to), at most limit bytes decoded. The status of an error: 415 for an
// encoding nixoci does not read, 413 for a body over the limit, 400 for
// a body that does not decode.
func uploadBody(r *http.Request, limit int64) (io.ReadCloser, int, error) {
	enc := r.Header.Get("Content-Encoding")
	rc, err := codec.DecodeContent(http.MaxBytesReader(nil, r.Body, limit), enc, limit)
	if err != nil {
		return nil, uploadStatus(err), err
	}
	return rc, 0, nil
}

// readUploadBody reads the decoded body whole (at most limit bytes).
func readUploadBody(r *http.Request, limit int64) ([]byte, int, error) {
	rc, status, err := uploadBody(r, limit)
	if err != nil {
		return nil, status, err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, uploadStatus(err), fmt.Errorf("receiving %s: %w", r.URL.Path, err)
	}
	return data, 0, nil
}

// uploadStatus maps a failure to read an upload to its status.
func uploadStatus(err error) int {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe), errors.Is(err, codec.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, codec.ErrEncoding) && strings.Contains(err.Error(), "is not one of"):
		return http.StatusUnsupportedMediaType
	}
	return http.StatusBadRequest
}

// storeFile writes a file artifact to the upload backend and forgets
// what was cached under its tags.
func (u *uploader) storeFile(ctx context.Context, fa *artifact.FileArtifact, tags ...string) (int, error) {
	if err := artifact.StoreFileArtifact(ctx, u.s.backends.List()[0].Target, fa, tags...); err != nil {
		return statusOf(err), err
	}
	for _, t := range tags {
		u.s.files.Remove(t)
	}
	return http.StatusCreated, nil
}

// spool receives a large upload body into a temporary file (removed by
// the returned cleanup), returning it rewound and its size.
func (u *uploader) spool(r *http.Request, limit int64) (*os.File, int64, func(), int, error) {
	rc, status, err := uploadBody(r, limit)
	if err != nil {
		return nil, 0, nil, status, err
	}
	defer rc.Close()
	f, err := os.CreateTemp(u.opts.TempDir, "nixoci-upload-*")
	if err != nil {
		return nil, 0, nil, http.StatusInternalServerError, err
	}
	cleanup := func() { f.Close(); os.Remove(f.Name()) }
	n, err := io.Copy(f, rc)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		cleanup()
		return nil, 0, nil, uploadStatus(err), fmt.Errorf("receiving %s: %w", r.URL.Path, err)
	}
	return f, n, cleanup, 0, nil
}
