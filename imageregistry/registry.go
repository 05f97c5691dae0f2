package imageregistry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/image"
	"github.com/nixoci/nixoci/internal/serving"
)

// Options configure a Registry. Zero values mean the documented defaults.
type Options struct {
	// Backends hold the closures; images are composed in the first one
	// holding all of a name's closures, which must be writable. Required;
	// handlers on one listener share one (see package serving).
	Backends *serving.Backends
	// Names gives friendly names and meta-packages; a name component not
	// listed here is a closure tag.
	Names map[string]NameSpec
	// Image holds defaults for composed images (compression, max layers,
	// jobs); entrypoint and the like come from Names.
	Image image.Options
	// CacheTTL is how long a composed image is remembered (its closures
	// are resolved again at each request all the same); default 10 minutes.
	CacheTTL time.Duration
	// MaxCompositions is how many images are composed at once; a request
	// needing one more is answered 503 with Retry-After. Default
	// DefaultMaxCompositions.
	MaxCompositions int
	// Ephemeral stores composed images untagged: no compose.* tag is
	// written, so a name asked for once leaves nothing a collector keeps.
	// Their layers are stored (and reused) all the same.
	Ephemeral bool
	// Logger receives error logs; default slog.Default().
	Logger *slog.Logger
	// AccessLog logs every request that is not a 5xx, one line each, to
	// AccessLogTo; 5xx answers are logged through Logger in any case.
	AccessLog bool
	// AccessLogTo receives the access log; default one writing to
	// os.Stderr (where slog's default handler writes too), written out
	// at Close. Handlers on one listener share one.
	AccessLogTo *serving.AccessLog
}

// DefaultMaxCompositions is the default of Options.MaxCompositions: a
// composition converting layers keeps a core busy compressing.
const DefaultMaxCompositions = 4

// retryAfter is what a client refused for too many compositions is told
// to wait, in seconds.
const retryAfter = "10"

// Registry is an http.Handler serving the read-only OCI distribution API
// under /v2/.
type Registry struct {
	opts     Options
	log      *slog.Logger
	backends *serving.Backends
	metrics  *metrics
	composed *serving.LRU[*composed] // composition key -> composed image
	flight   singleflight.Group
	running  chan struct{} // one token per composition running
	handler  *serving.Handler
}

// New makes a Registry.
func New(opts Options) (*Registry, error) {
	if opts.Backends == nil {
		return nil, errors.New("imageregistry: no backend")
	}
	if opts.CacheTTL == 0 {
		opts.CacheTTL = 10 * time.Minute
	}
	if opts.MaxCompositions <= 0 {
		opts.MaxCompositions = DefaultMaxCompositions
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	g := &Registry{
		opts:     opts,
		log:      opts.Logger,
		backends: opts.Backends,
		composed: serving.NewLRU[*composed](1000),
		running:  make(chan struct{}, opts.MaxCompositions),
	}
	m, err := newMetrics(opts.Backends.Metrics())
	if err != nil {
		return nil, fmt.Errorf("imageregistry: %w (one registry per serving.Backends)", err)
	}
	g.metrics = m
	g.handler = serving.NewHandler(http.HandlerFunc(g.serve), serving.HandlerOptions{
		Metrics: opts.Backends.Metrics(), Logger: opts.Logger, AccessLog: opts.AccessLog, AccessLogTo: opts.AccessLogTo,
		Route: func(*http.Request) *serving.Route { return m.route },
		BadPath: func(w http.ResponseWriter) {
			registryError(w, http.StatusBadRequest, codeNameInvalid, "escapes, empty or dot segments in the path")
		},
	})
	return g, nil
}

// ServeHTTP answers a request under /v2/ (or /v2), counting and logging it.
func (g *Registry) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.handler.ServeHTTP(w, r) }

// endpoints are the path parts after a repository name, in the order
// they are looked for.
var endpoints = []string{"/manifests/", "/blobs/", "/tags/", "/referrers/"}

func (g *Registry) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		registryError(w, http.StatusMethodNotAllowed, codeUnsupported, "this registry is read-only")
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v2/")
	if !ok {
		if r.URL.Path != "/v2" {
			registryError(w, http.StatusNotFound, codeUnsupported, "unknown endpoint")
			return
		}
		rest = ""
	}
	if rest == "" {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, "{}")
		return
	}
	var name, kind, ref string
	for _, k := range endpoints {
		if i := strings.LastIndex(rest, k); i > 0 {
			name, kind, ref = rest[:i], strings.Trim(k, "/"), rest[i+len(k):]
			break
		}
	}
	if kind == "" {
		registryError(w, http.StatusNotFound, codeUnsupported, "unknown endpoint")
		return
	}
	if err := checkName(name); err != nil {
		registryError(w, http.StatusBadRequest, codeNameInvalid, err.Error())
		return
	}
	switch {
	case kind == "manifests":
		g.serveManifest(w, r, name, ref)
	case kind == "blobs":
		g.serveBlob(w, r, name, ref)
	case kind == "tags" && ref == "list":
		g.serveTags(w, r, name)
	case kind == "referrers":
		g.serveReferrers(w, r, name, ref)
	default:
		registryError(w, http.StatusNotFound, codeUnsupported, "unknown endpoint")
	}
}

// imageOf returns the image of a repository name, answering the client
// itself (and returning false) if there is none.
func (g *Registry) imageOf(w http.ResponseWriter, ctx context.Context, name string) (*composed, bool) {
	c, err := g.compose(ctx, name)
	switch {
	case err == nil:
		return c, true
	case errors.Is(err, ErrBusy):
		w.Header().Set("Retry-After", retryAfter)
		registryError(w, http.StatusServiceUnavailable, codeTooManyRequests, err.Error())
	case serving.IsNotFound(err):
		registryError(w, http.StatusNotFound, codeNameUnknown, err.Error())
	case isCannotCompose(err):
		registryError(w, http.StatusBadRequest, codeNameInvalid, err.Error())
	default:
		g.fail(w, "composing "+name, err)
	}
	return nil, false
}

// imageReaching returns the image of a repository name if it reaches the
// digest d: the image remembered, else the image composed now (its
// closures may have moved since). found is false, and nothing
// answered, if the image does not reach d; ok is false if the client was
// answered an error.
func (g *Registry) imageReaching(w http.ResponseWriter, ctx context.Context, name string, d digest.Digest) (c *composed, desc ocispec.Descriptor, found, ok bool) {
	if c, hit := g.cached(name); hit {
		if desc, found := c.reaches(d); found {
			return c, desc, true, true
		}
	}
	if c, ok = g.imageOf(w, ctx, name); !ok {
		return nil, desc, false, false
	}
	desc, found = c.reaches(d)
	return c, desc, found, true
}

// serveManifest answers a manifest request: latest is the name's image;
// a digest, a manifest that image reaches (the image, or one platform's
// under its index). Any other reference is unknown (SPEC.md section 9).
func (g *Registry) serveManifest(w http.ResponseWriter, r *http.Request, name, ref string) {
	var desc ocispec.Descriptor
	var data []byte
	if d, err := digest.Parse(ref); err == nil {
		c, found, ok := g.manifestOf(w, r.Context(), name, d)
		if !ok {
			return
		}
		if !found {
			registryError(w, http.StatusNotFound, codeManifestUnknown, "no manifest "+ref+" in "+name)
			return
		}
		desc, data = c.desc, c.data
	} else {
		if ref != latestTag {
			registryError(w, http.StatusNotFound, codeManifestUnknown,
				fmt.Sprintf("unknown tag %q: an image made on demand is tagged %s only", ref, latestTag))
			return
		}
		c, ok := g.imageOf(w, r.Context(), name)
		if !ok {
			return
		}
		desc, data = c.desc, c.data
	}
	h := w.Header()
	h.Set("Content-Type", desc.MediaType)
	h.Set("Docker-Content-Digest", desc.Digest.String())
	h.Set("ETag", `"`+desc.Digest.String()+`"`)
	h.Set("Content-Length", strconv.Itoa(len(data)))
	if r.Method == http.MethodGet {
		w.Write(data)
	}
}

// manifestOf finds the manifest d among those the image of name reaches:
// the image itself, held in memory, or a manifest under its index, read
// from the backend it was composed in.
func (g *Registry) manifestOf(w http.ResponseWriter, ctx context.Context, name string, d digest.Digest) (m manifestData, found, ok bool) {
	c, desc, found, ok := g.imageReaching(w, ctx, name, d)
	if !ok || !found {
		return m, found, ok
	}
	if desc.MediaType != ocispec.MediaTypeImageManifest && desc.MediaType != ocispec.MediaTypeImageIndex {
		return m, false, true // a blob: not a manifest
	}
	if d == c.desc.Digest {
		return manifestData{c.desc, c.data}, true, true
	}
	ctx, cancel := context.WithTimeout(ctx, g.backends.Timeout())
	defer cancel()
	b := g.backends.List()[c.backend]
	got, data, err := backend.FetchManifest(ctx, b.Target, d.String())
	if err == nil && got.Digest != d {
		err = fmt.Errorf("manifest %s is corrupt in %s: %w", d, b.Name, backend.ErrHashMismatch)
	}
	if err != nil {
		// The image reaches it: missing or not, it is the backend's failure.
		if serving.IsNotFound(err) {
			err = fmt.Errorf("manifest %s of the image of %s is gone from %s: %w", d, name, b.Name, backend.ErrRegistry)
		}
		g.fail(w, "manifest "+d.String(), err)
		return m, false, false
	}
	return manifestData{got, data}, true, true
}

// manifestData is a manifest and its descriptor.
type manifestData struct {
	desc ocispec.Descriptor
	data []byte
}

// serveBlob answers a blob request for a blob the image of name reaches.
func (g *Registry) serveBlob(w http.ResponseWriter, r *http.Request, name, ref string) {
	d, err := digest.Parse(ref)
	if err != nil {
		registryError(w, http.StatusBadRequest, codeDigestInvalid, "invalid digest "+strconv.Quote(ref))
		return
	}
	_, _, found, ok := g.imageReaching(w, r.Context(), name, d)
	if !ok {
		return
	}
	if !found {
		registryError(w, http.StatusNotFound, codeBlobUnknown, "no blob "+ref+" in "+name)
		return
	}
	loc, found, err := g.backends.LocateBlob(r.Context(), d)
	if err != nil {
		g.fail(w, "blob "+ref, err)
		return
	}
	if !found {
		g.fail(w, "blob "+ref, fmt.Errorf("blob %s of the image of %s is in no backend: %w", ref, name, backend.ErrRegistry))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Docker-Content-Digest", d.String())
	h.Set("ETag", `"`+d.String()+`"`)
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	if r.Method == http.MethodHead {
		h.Set("Content-Length", strconv.FormatInt(loc.Desc.Size, 10))
		return
	}
	rc, err := g.backends.OpenBlob(r.Context(), loc)
	if err != nil {
		g.fail(w, "blob "+ref, err)
		return
	}
	defer rc.Close()
	if err := g.backends.ServeBlob(w, r, loc, rc, nil); err != nil {
		g.log.Error("corrupt blob served truncated", "digest", d.String(), "backend", g.backends.List()[loc.Backend].Name, "err", err)
	}
}

// Close writes out the access log if the Registry made it (AccessLog
// without AccessLogTo); requests served after Close are logged at once.
func (g *Registry) Close() error { return g.handler.Close() }
