package substituter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"
	"golang.org/x/sync/singleflight"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// Backend is one place artifacts are read from.
type Backend struct {
	Name   string // shown in logs, e.g. "oci:/srv/nix" or "ghcr.io/me/nix"
	Target backend.Target
}

// Options configure a Server. Zero values mean the documented defaults.
type Options struct {
	// Backends are tried in order; the first that has a path answers.
	Backends []Backend
	// SignKeys add one signature each to every narinfo served.
	SignKeys []narinfo.SecretKey
	// Priority is announced in nix-cache-info; default 40 (as
	// cache.nixos.org, lower is preferred).
	Priority int
	// StoreDir is announced in nix-cache-info; default /nix/store.
	StoreDir string
	// BackendTimeout bounds each metadata request to a backend (narinfo
	// lookups, blob lookups); default 20s. NAR bodies are not bounded in
	// total, only by BackendIdleTimeout between reads... see NARIdleTimeout.
	BackendTimeout time.Duration
	// MaxBackendRequests bounds concurrent backend operations; default 64.
	MaxBackendRequests int
	// CacheSize is the number of narinfos kept in memory; default 50000.
	CacheSize int
	// CacheTTL is how long a found narinfo is served from memory; default
	// 10 minutes. Artifacts are immutable per digest, but a tag can be
	// moved to a manifest with more signatures.
	CacheTTL time.Duration
	// NegativeTTL is how long "not found" is remembered; default 5s, so a
	// path pushed a moment ago appears quickly.
	NegativeTTL time.Duration
	// Upload, if set, accepts `nix copy --to http://…` into the first
	// backend for clients presenting one of its credentials.
	Upload *UploadOptions
	// Registry, if set, also serves the read-only OCI distribution API
	// under /v2/, composing images from closures (see RegistryOptions).
	Registry *RegistryOptions
	// Logger receives access and error logs; default slog.Default().
	Logger *slog.Logger
	// AccessLog logs every request (at Info); errors are always logged.
	AccessLog bool
}

// Server is an http.Handler speaking the Nix binary-cache protocol.
type Server struct {
	opts     Options
	log      *slog.Logger
	metrics  *metrics
	narinfos *lru[*pathEntry]  // hash part -> entry (nil entry: not found)
	nars     *lru[narLocation] // nar digest hex -> where it is
	verified *lru[fileID]      // blob digest -> identity of the file hashed whole
	composed *lru[*composed]   // repository name -> composed image
	flight   singleflight.Group
	sem      chan struct{}
	inflight atomic.Int64
	mux      *http.ServeMux
	upload   *uploader
}

// New makes a Server.
func New(opts Options) (*Server, error) {
	if len(opts.Backends) == 0 {
		return nil, errors.New("substituter: no backend")
	}
	if opts.Priority == 0 {
		opts.Priority = 40
	}
	if opts.StoreDir == "" {
		opts.StoreDir = "/nix/store"
	}
	if opts.BackendTimeout <= 0 {
		opts.BackendTimeout = 20 * time.Second
	}
	if opts.MaxBackendRequests <= 0 {
		opts.MaxBackendRequests = 64
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = 50000
	}
	if opts.CacheTTL == 0 {
		opts.CacheTTL = 10 * time.Minute
	}
	if opts.NegativeTTL == 0 {
		opts.NegativeTTL = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{
		opts:     opts,
		log:      opts.Logger,
		metrics:  newMetrics(),
		narinfos: newLRU[*pathEntry](opts.CacheSize),
		nars:     newLRU[narLocation](opts.CacheSize),
		verified: newLRU[fileID](opts.CacheSize),
		composed: newLRU[*composed](1000),
		sem:      make(chan struct{}, opts.MaxBackendRequests),
	}
	if opts.Upload != nil {
		u, err := newUploader(s, *opts.Upload)
		if err != nil {
			return nil, err
		}
		s.upload = u
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /nix-cache-info", s.serveCacheInfo)
	s.mux.HandleFunc("GET /healthz", s.serveHealth)
	s.mux.HandleFunc("GET /metrics", s.serveMetrics)
	s.mux.HandleFunc("GET /{file}", s.serveNarInfo)
	s.mux.HandleFunc("GET /nar/{file}", s.serveNAR)
	s.mux.HandleFunc("PUT /{file}", s.servePut)
	if opts.Registry != nil {
		s.mux.HandleFunc("/v2/", s.serveRegistry)
	}
	s.mux.HandleFunc("PUT /nar/{file}", s.servePut)
	return s, nil
}

// narinfoHash returns the hash part of "<32 nix-base32 chars>.narinfo".
func narinfoHash(file string) (string, bool) {
	h, ok := strings.CutSuffix(file, ".narinfo")
	return h, ok && len(h) == 32 && isNix32(h)
}

// narName splits "<52 nix-base32 chars>.nar[.xz|.zst]" into the hash and
// the extension after ".nar".
func narName(file string) (hash, ext string, ok bool) {
	if len(file) < 56 || file[52:56] != ".nar" || !isNix32(file[:52]) {
		return "", "", false
	}
	switch ext = file[56:]; ext {
	case "", ".xz", ".zst":
		return file[:52], ext, true
	}
	return "", "", false
}

func isNix32(s string) bool {
	for i := 0; i < len(s); i++ {
		if !nixbase32.Is(s[i]) {
			return false
		}
	}
	return true
}

// ServeHTTP routes a request, counting and logging it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	rw := &recorder{ResponseWriter: w, status: http.StatusOK}
	route := routeOf(r)
	defer func() {
		status := strconv.Itoa(rw.status)
		s.metrics.add("nixoci_requests_total", 1, "route", route, "method", methodLabel(r.Method), "status", status)
		s.metrics.add("nixoci_response_bytes_total", float64(rw.bytes), "route", route)
		if s.opts.AccessLog || rw.status >= 500 {
			level := slog.LevelInfo
			if rw.status >= 500 {
				level = slog.LevelError
			}
			// Never log headers: they may carry credentials.
			s.log.Log(r.Context(), level, "request", "method", r.Method, "path", r.URL.EscapedPath(),
				"status", rw.status, "bytes", rw.bytes, "duration", time.Since(start).Round(time.Microsecond), "remote", r.RemoteAddr)
		}
	}()
	// Every valid path is plain ASCII without escapes or dot segments;
	// refuse anything else before it reaches a backend.
	if strings.Contains(r.RequestURI, "%") || strings.Contains(r.URL.Path, "..") || strings.Contains(r.URL.Path, "//") {
		if strings.HasPrefix(r.URL.Path, "/v2/") && s.opts.Registry != nil {
			registryError(rw, http.StatusBadRequest, codeNameInvalid, "escapes, empty or dot segments in the path")
			return
		}
		http.Error(rw, "bad path", http.StatusBadRequest)
		return
	}
	s.mux.ServeHTTP(rw, r)
}

// methodLabel bounds the method label: clients choose methods freely.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPut:
		return m
	}
	return "other"
}

// routeOf names the route for metrics, bounded in cardinality.
func routeOf(r *http.Request) string {
	p := r.URL.Path
	switch {
	case p == "/nix-cache-info", p == "/healthz", p == "/metrics":
		return p
	case strings.HasSuffix(p, ".narinfo"):
		return "narinfo"
	case strings.HasPrefix(p, "/nar/"):
		return "nar"
	case strings.HasPrefix(p, "/v2/"):
		return "registry"
	}
	return "other"
}

func (s *Server) serveCacheInfo(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/x-nix-cache-info")
	io.WriteString(w, spec.CacheInfo(s.opts.StoreDir, s.opts.Priority))
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	s.metrics.write(w)
	fmt.Fprintf(w, "# HELP nixoci_inflight_requests Requests being served.\n# TYPE nixoci_inflight_requests gauge\nnixoci_inflight_requests %d\n", s.inflight.Load())
	fmt.Fprintf(w, "# HELP nixoci_cached_narinfos Narinfo lookups held in memory.\n# TYPE nixoci_cached_narinfos gauge\nnixoci_cached_narinfos %d\n", s.narinfos.len())
}

// serveHealth checks every backend.
func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.BackendTimeout)
	defer cancel()
	var failed []string
	for _, b := range s.opts.Backends {
		if err := b.Target.Ping(ctx); err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", b.Name, err))
		}
	}
	if len(failed) > 0 {
		http.Error(w, "unhealthy:\n"+strings.Join(failed, "\n"), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

// acquire takes a backend slot; it fails when ctx ends first.
func (s *Server) acquire(ctx context.Context) (release func(), err error) {
	select {
	case s.sem <- struct{}{}:
		return func() { <-s.sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// recorder captures the status and body size of a response.
type recorder struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// ReadFrom keeps sendfile(2) working for files served through recorder.
func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	r.wroteHeader = true
	n, err := io.Copy(r.ResponseWriter, src)
	r.bytes += n
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
