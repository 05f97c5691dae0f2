package imageregistry

import (
	"context"
	"encoding/json"
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
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/image"
	"github.com/nixoci/nixoci/internal/serving"
	"github.com/nixoci/nixoci/spec"
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

// Registry is an http.Handler serving the read-only OCI distribution API
// under /v2/.
type Registry struct {
	opts     Options
	log      *slog.Logger
	backends *serving.Backends
	metrics  *metrics
	composed *serving.LRU[*composed] // repository name -> composed image
	flight   singleflight.Group
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
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	g := &Registry{
		opts:     opts,
		log:      opts.Logger,
		backends: opts.Backends,
		composed: serving.NewLRU[*composed](1000),
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

// composed is an image composed for a repository name.
type composed struct {
	closures []string // digests of the closures it was made from
	desc     ocispec.Descriptor
	data     []byte
}

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
	for _, k := range []string{"/manifests/", "/blobs/", "/tags/"} {
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
		g.serveBlob(w, r, ref)
	case kind == "tags" && ref == "list":
		// Any valid name is an image tagged latest; whether its closures
		// exist is found out when its manifest is asked for.
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"name": name, "tags": []string{"latest"}})
	default:
		registryError(w, http.StatusNotFound, codeUnsupported, "unknown endpoint")
	}
}

func (g *Registry) serveManifest(w http.ResponseWriter, r *http.Request, name, ref string) {
	var desc ocispec.Descriptor
	var data []byte
	if d, err := digest.Parse(ref); err == nil {
		desc, data, err = g.manifestByDigest(r.Context(), d)
		if err != nil {
			if serving.IsNotFound(err) {
				registryError(w, http.StatusNotFound, codeManifestUnknown, "no manifest "+ref)
				return
			}
			g.fail(w, "manifest "+ref, err)
			return
		}
	} else {
		if !spec.ValidTag(ref) {
			registryError(w, http.StatusBadRequest, codeManifestUnknown, "invalid tag "+strconv.Quote(ref))
			return
		}
		c, err := g.compose(r.Context(), name)
		if err != nil {
			if serving.IsNotFound(err) {
				registryError(w, http.StatusNotFound, codeNameUnknown, err.Error())
				return
			}
			if isCannotCompose(err) {
				registryError(w, http.StatusBadRequest, codeNameInvalid, err.Error())
				return
			}
			g.fail(w, "composing "+name, err)
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

// manifestByDigest finds a manifest by digest: a composed one, or one
// stored in a backend.
func (g *Registry) manifestByDigest(ctx context.Context, d digest.Digest) (ocispec.Descriptor, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, g.backends.Timeout())
	defer cancel()
	var errs []error
	for _, b := range g.backends.List() {
		desc, data, err := backend.FetchManifest(ctx, b.Target, d.String())
		if serving.IsNotFound(err) {
			continue
		}
		if errors.Is(err, backend.ErrHashMismatch) || err == nil && desc.Digest != d {
			return desc, nil, fmt.Errorf("manifest %s is corrupt in %s: %w", d, b.Name, backend.ErrHashMismatch)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return desc, data, nil
	}
	if len(errs) > 0 {
		return ocispec.Descriptor{}, nil, errors.Join(errs...)
	}
	return ocispec.Descriptor{}, nil, fmt.Errorf("%s: %w", d, errdef.ErrNotFound)
}

func (g *Registry) serveBlob(w http.ResponseWriter, r *http.Request, ref string) {
	d, err := digest.Parse(ref)
	if err != nil {
		registryError(w, http.StatusBadRequest, codeDigestInvalid, "invalid digest "+strconv.Quote(ref))
		return
	}
	loc, found, err := g.backends.LocateBlob(r.Context(), d)
	if err != nil {
		g.fail(w, "blob "+ref, err)
		return
	}
	if !found {
		registryError(w, http.StatusNotFound, codeBlobUnknown, "no blob "+ref)
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
