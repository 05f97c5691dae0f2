package substituter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/nixoci/nixoci/catalog"
	"github.com/nixoci/nixoci/internal/serving"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// Options configure a Server. Zero values mean the documented defaults.
type Options struct {
	// Backends are tried in order; the first that has a path answers.
	// Required; handlers on one listener share one (see package serving).
	Backends *serving.Backends
	// SignKeys add one signature each to the narinfos the server vouches
	// for (see trustPolicy): those whose stored signatures verify against
	// TrustedKeys or the public half of a SignKeys key, which the server
	// adds to paths it receives through an authenticated upload. Other
	// narinfos are served with the signatures they have.
	SignKeys []narinfo.SecretKey
	// TrustedKeys are the keys whose signatures make the server vouch
	// for a path, besides its own.
	TrustedKeys []narinfo.PublicKey
	// SignUnverified signs every narinfo the backends hold, verified or
	// not: whoever can push to a backend then gets paths trusted by every
	// client of the server. Only for backends no one but trusted
	// writers can push to.
	SignUnverified bool
	// Priority is announced in nix-cache-info; default 40 (as
	// cache.nixos.org, lower is preferred).
	Priority int
	// StoreDir is announced in nix-cache-info; default /nix/store.
	StoreDir string
	// CacheSize is the number of narinfo lookups (found or not) kept in
	// memory; default 50000.
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
	// Logger receives error logs; default slog.Default().
	Logger *slog.Logger
	// AccessLog logs every request that is not a 5xx, one line each, to
	// AccessLogTo; 5xx answers are logged through Logger in any case.
	AccessLog bool
	// BlobCache, if set, receives NARs fetched ahead of a client that
	// substitutes (see narAhead): those of the narinfos (GET) it asks for
	// once it has asked for a NAR. NAR requests are served from it when it
	// has the blob or is fetching it.
	BlobCache *serving.BlobCache
	// RedirectBlobs answers a NAR request with the registry's own
	// redirect to its storage, when the backend is a registry that
	// redirects blob downloads (object storage behind distribution, GHCR,
	// ECR): NAR bytes then never pass through the server (Nix checks each
	// NAR's hash either way). NARs are then not fetched into BlobCache.
	RedirectBlobs bool
	// NARAhead says from which sources NARs are fetched ahead into
	// BlobCache: by default (auto) from those whose fastest recent
	// answer took at least NARAheadLatency (see aheadPays).
	NARAhead NARAhead
	// NARAheadLatency is the distance from which a source's NARs are
	// fetched ahead in auto mode; default DefaultNARAheadLatency.
	NARAheadLatency time.Duration
	// Prefetch bounds the requests made ahead of Nix (see prefetcher);
	// default 32, negative disables prefetching.
	Prefetch int
	// CatalogInterval is how often each backend's closures are read, so
	// that closures copied without their path tags are served (SPEC.md
	// 5.3); default 1 minute, negative: never (closures are then found
	// only through their roots' referrers). The first read starts with
	// the server.
	CatalogInterval time.Duration
	// CatalogMaxPaths bounds the paths the catalogs hold; default
	// catalog.DefaultMaxPaths.
	CatalogMaxPaths int
	// Pull, if set, pulls paths no backend has through upstream binary
	// caches, storing them in the first backend (pull.go). It needs
	// BlobCache.
	Pull *PullOptions
	// Stored, if set, is called with each path the server stored in its
	// first backend: pulled from an upstream, or uploaded (also one the
	// backend held already). It must not block for long.
	Stored func(StoredPath)
	// Records configure the records of what the server stores (SPEC.md
	// section 14.5), written whenever Upload or Pull is set, so that a
	// garbage collection keeps what was uploaded or pulled; nil means the
	// defaults of RecordOptions.
	Records *RecordOptions
	// AccessLogTo receives the access log; default one writing to
	// os.Stderr (where slog's default handler writes too), written out
	// at Close. Handlers on one listener share one.
	AccessLogTo *serving.AccessLog
	// Clients tell clients apart for what is counted per client
	// (password checks, NARs fetched ahead); default by their address,
	// trusting no proxy's X-Forwarded-For.
	Clients *serving.Clients
}

// Server is an http.Handler speaking the Nix binary-cache protocol.
type Server struct {
	opts     Options
	log      *slog.Logger
	backends *serving.Backends
	metrics  *metrics
	narinfos *serving.LRU[*pathEntry] // hash part -> entry (nil entry: not found)
	resolver *resolver
	flight   singleflight.Group // other lookups shared by concurrent requests (files, listings)
	handler  *serving.Handler
	health   *serving.Health
	upload   *uploader
	catalogs []*catalog.Catalog       // one per backend
	prefetch *prefetcher              // nil: off
	pull     *puller                  // nil: no upstreams
	ahead    *narAhead                // nil: no NARs ahead
	gate     *aheadGate               // which sources' NARs are fetched ahead
	stop     context.CancelFunc       // ends the catalog refreshes
	files    *serving.LRU[*fileEntry] // tag -> file artifact (nil entry: not found)
	listings *listingCache            // listings made from NARs
	ready    chan struct{}            // closed when the catalogs were first read
	records  *recorder                // nil: neither uploads nor pull-through
}

// New makes a Server.
func New(opts Options) (*Server, error) {
	if opts.Backends == nil {
		return nil, errors.New("substituter: no backend")
	}
	if opts.Priority == 0 {
		opts.Priority = 40
	}
	if opts.StoreDir == "" {
		opts.StoreDir = "/nix/store"
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
	if opts.Clients == nil {
		opts.Clients = serving.NewClients(nil)
	}
	s := &Server{
		opts:     opts,
		log:      opts.Logger,
		backends: opts.Backends,
		narinfos: serving.NewLRU[*pathEntry](opts.CacheSize),
		files:    serving.NewLRU[*fileEntry](opts.CacheSize),
		listings: newListingCache(),
	}
	m, err := newMetrics(opts.Backends.Metrics(), s.narinfos)
	if err != nil {
		return nil, fmt.Errorf("substituter: %w (one binary-cache server per serving.Backends)", err)
	}
	s.metrics = m
	s.resolver = newResolver(opts, s.narinfos, opts.Backends.Timeout())
	s.resolver.found = func(e *pathEntry) {
		if s.pull != nil {
			s.pull.closures.found(e)
		}
		switch loc := e.NAR.(type) {
		case backendNAR:
			s.backends.RememberBlob(loc.Backend, loc.Desc)
		case upstreamNAR:
			s.pull.found(loc)
		}
	}
	if err := opts.Backends.Metrics().Register(s.resolver.collectors()...); err != nil {
		return nil, fmt.Errorf("substituter: %w", err)
	}
	// The sources, in order: every backend by tag, then every backend's
	// closures, so that a failing backend does not hide a path a later
	// one holds in a copied closure.
	catMetrics := newCatalogMetrics()
	if err := opts.Backends.Metrics().Register(catMetrics.collectors()...); err != nil {
		return nil, fmt.Errorf("substituter: %w", err)
	}
	for i, b := range opts.Backends.List() {
		s.catalogs = append(s.catalogs, catalog.New(b.Target, b.Name, catalog.Options{MaxPaths: opts.CatalogMaxPaths, OnRefresh: catMetrics.observer(b.Name)}))
		s.resolver.sources = append(s.resolver.sources, tagSource{s, i})
	}
	for i, c := range s.catalogs {
		s.resolver.sources = append(s.resolver.sources, catalogSource{s, i, c, opts.CatalogInterval >= 0})
	}
	// Then the upstreams, for what no backend holds.
	if opts.Pull != nil {
		if s.pull, err = newPuller(s, *opts.Pull, opts.BlobCache); err != nil {
			return nil, err
		}
		s.resolver.sources = append(s.resolver.sources, s.pull.sources()...)
		if err := opts.Backends.Metrics().Register(s.pull.collectors()...); err != nil {
			return nil, fmt.Errorf("substituter: %w", err)
		}
	}
	if opts.Prefetch >= 0 {
		if opts.Prefetch == 0 {
			opts.Prefetch = 32
		}
		s.prefetch = newPrefetcher(s, opts.Prefetch)
		if err := opts.Backends.Metrics().Register(s.prefetch.collectors()...); err != nil {
			return nil, fmt.Errorf("substituter: %w", err)
		}
	}
	if opts.CatalogInterval == 0 {
		opts.CatalogInterval = time.Minute
	}
	if opts.BlobCache != nil && !opts.RedirectBlobs && opts.NARAhead != NARAheadOff {
		s.ahead = newNARAhead(s.fetchAhead, opts.Clients)
		s.gate = newAheadGate(opts.NARAhead, opts.NARAheadLatency, opts.Logger)
		if err := opts.Backends.Metrics().Register(s.gate.decisions); err != nil {
			return nil, fmt.Errorf("substituter: %w", err)
		}
	}
	s.opts = opts
	if opts.Upload != nil {
		u, err := newUploader(s, *opts.Upload)
		if err != nil {
			return nil, err
		}
		s.upload = u
	}
	if opts.Upload != nil || opts.Pull != nil {
		var ro RecordOptions
		if opts.Records != nil {
			ro = *opts.Records
		}
		if s.records, err = newRecorder(s, ro); err != nil {
			return nil, err
		}
		if err := opts.Backends.Metrics().Register(s.records.collectors()...); err != nil {
			return nil, fmt.Errorf("substituter: %w", err)
		}
	}
	// Nothing fails after this point: the refreshes and flushes started
	// here end only at Close.
	if s.records != nil {
		s.records.start()
	}
	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	s.ready = make(chan struct{})
	if opts.CatalogInterval > 0 {
		go s.refreshCatalogs(ctx, opts.CatalogInterval)
	} else {
		close(s.ready)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /nix-cache-info", s.serveCacheInfo)
	mux.HandleFunc("GET /healthz", s.serveHealth)
	mux.HandleFunc("GET /healthz/upstreams", s.serveUpstreamHealth)
	mux.Handle("GET /metrics", opts.Backends.Metrics().Handler())
	mux.HandleFunc("GET /{file}", s.serveNarInfo)
	mux.HandleFunc("GET /nar/{file}", s.serveNAR)
	mux.HandleFunc("PUT /{file}", s.servePut)
	mux.HandleFunc("PUT /nar/{file}", s.servePut)
	s.routeFiles(mux) // logs, realisations, debug info (files.go)
	s.handler = serving.NewHandler(mux, serving.HandlerOptions{
		Metrics: opts.Backends.Metrics(), Route: s.metrics.route, Logger: opts.Logger,
		AccessLog: opts.AccessLog, AccessLogTo: opts.AccessLogTo,
	})
	s.health = serving.NewHealth(opts.Backends, opts.Logger)
	return s, nil
}

// narinfoHash returns the hash part of "<32 nix-base32 chars>.narinfo".
func narinfoHash(file string) (string, bool) {
	h, ok := strings.CutSuffix(file, ".narinfo")
	return h, ok && spec.IsHashPart(h)
}

// narName splits "<52 nix-base32 chars>.nar[.xz|.zst]" into the hash and
// the extension after ".nar".
func narName(file string) (hash, ext string, ok bool) {
	if len(file) < 56 || file[52:56] != ".nar" || !spec.IsNix32(file[:52]) {
		return "", "", false
	}
	switch ext = file[56:]; ext {
	case "", ".xz", ".zst":
		return file[:52], ext, true
	}
	return "", "", false
}

// ServeHTTP routes a request, counting and logging it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

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
	}
	if r := fileRoute(p); r != "" {
		return r
	}
	return "other"
}

func (s *Server) serveCacheInfo(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/x-nix-cache-info")
	io.WriteString(w, spec.CacheInfo(s.opts.StoreDir, s.opts.Priority))
}

// serveHealth answers whether every backend answers (see
// serving.Health): cheap enough to poll, naming the failing backends
// without their errors, which are logged. Its status is the backends'
// alone; with upstreams, a healthy answer adds a line on them (see
// serveUpstreamHealth): an upstream down leaves serve answering what its
// backends hold.
func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	if s.pull == nil || len(s.health.Check(r.Context())) > 0 {
		s.health.ServeHTTP(w, r)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok\n")
	if failed := s.pull.health.check(r.Context(), s.backends.Timeout()); len(failed) > 0 {
		fmt.Fprintf(w, "upstreams: degraded: %s do not answer (see /healthz/upstreams)\n", strings.Join(failed, ", "))
	} else {
		io.WriteString(w, "upstreams: ok\n")
	}
}

// serveUpstreamHealth answers 200 if every upstream answers, else 503
// naming those that do not (404 without upstreams).
func (s *Server) serveUpstreamHealth(w http.ResponseWriter, r *http.Request) {
	if s.pull == nil {
		http.Error(w, "no upstreams (serve --upstream)", http.StatusNotFound)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if failed := s.pull.health.check(r.Context(), s.backends.Timeout()); len(failed) > 0 {
		http.Error(w, "unhealthy: "+strings.Join(failed, ", ")+" (see the server's log)", http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ok\n")
}

// fetchAhead fetches the NAR at loc into the blob cache ahead of a
// client, if that pays for its source (see aheadPays): from its
// backend, or pulled from its upstream (and stored).
func (s *Server) fetchAhead(loc NARLocation) {
	switch l := loc.(type) {
	case backendNAR:
		if s.gate.pays(s.backends.List()[l.Backend].Name, s.backends.Latency(l.Backend)) {
			s.opts.BlobCache.Prefetch(serving.BlobLocation(l))
		}
	case upstreamNAR:
		if s.gate.pays("upstream "+l.up.Name, l.up.latency) {
			s.pull.prefetch(l)
		}
	}
}

// storedPath records a path stored in the first backend, and tells
// Options.Stored. It reports false if the path cannot be recorded (too
// many wait while records fail to be written).
func (s *Server) storedPath(p StoredPath) bool {
	if s.opts.Stored != nil {
		s.opts.Stored(p)
	}
	if s.records == nil {
		return true
	}
	kind := spec.RecordPulled
	if p.From == "upload" {
		kind = spec.RecordUploaded
	}
	return s.records.add(kind, p.Path)
}

// Close stops the catalog refreshes and the stores of paths pulled
// through (waiting for them to end: a path not stored is pulled again
// when asked), writes the records of what is stored and not yet recorded
// (within RecordCloseTimeout; call it once requests have ended), and
// writes out the access log if the Server made it (AccessLog without
// AccessLogTo); requests served after Close are logged at once. An error
// says what could not be recorded.
func (s *Server) Close() error {
	s.stop()
	if s.pull != nil {
		s.pull.close()
	}
	var rerr error
	if s.records != nil {
		ctx, cancel := context.WithTimeout(context.Background(), RecordCloseTimeout)
		rerr = s.records.close(ctx)
		cancel()
	}
	return errors.Join(rerr, s.handler.Close())
}

// RecordCloseTimeout bounds the writing of records at Close.
const RecordCloseTimeout = 30 * time.Second
