package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nixoci/nixoci/image"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
	"github.com/nixoci/nixoci/substituter"
)

const serveHelp = `
Usage: nixoci serve [flags]

Serve the Nix binary-cache protocol over HTTP from stored artifacts, so Nix
substitutes straight from a registry or image-layout directory:

  nix.conf:  substituters = http://127.0.0.1:8080
             trusted-public-keys = <the public key of --sign-key>

Narinfos are rendered from the store-path manifests (one registry request
per path, then cached in memory); NARs stream from the blobs unchanged.
A backend failure is answered 502/503/504, never 404, because Nix caches
"not found" for an hour. /healthz checks the backends; /metrics is in the
Prometheus text format.

With --upload and --credentials, 'nix copy --to http://HOST:PORT' stores
paths as 'nixoci push' would (Nix sends the credentials from its
netrc-file); without --upload every PUT is refused.

With --registry, it is also a read-only OCI registry whose images are
composed on demand from stored closures: the repository name lists
closure tags (or names from --names) separated by '/', e.g.
'docker pull HOST:PORT/shell/hello:latest' gives the union of the closures
tagged shell and hello, one layer per store path, symlinks to their roots
in /. Layers are converted once, stored in the first --from target that
holds all of the name's closures, and reused by every later image; a
name whose layers exist answers at once.

Registry credentials come from the docker config file ($DOCKER_CONFIG,
with its credsStore and credHelpers), or, in containers, from the
environment: NIXOCI_REGISTRY_USERNAME and NIXOCI_REGISTRY_PASSWORD are
used for every --from registry. Uploads and composed layers larger
than --chunk-size are sent to registries in chunks.

Examples:
  nixoci serve --from oci:/srv/nix-oci --sign-key /etc/nix/cache.sec
  nixoci serve --from oci:/srv/nix-oci --registry --names /etc/nixoci/names.json
  nixoci serve --from ghcr.io/me/nix --from oci:/srv/local --listen 0.0.0.0:8080
  nixoci serve --from 127.0.0.1:5000/cache --upload --credentials /etc/nixoci/creds
`

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", serveHelp, stdout)
	var from, signKeys stringList
	fs.Var(&from, "from", "target to serve from, oci:DIR or HOST[:PORT]/REPO (repeatable, tried in order; default: the local store)")
	fs.Var(&signKeys, "sign-key", "add a signature made with this Nix secret key file to every narinfo (repeatable)")
	listen := fs.String("listen", "127.0.0.1:8080", "address to listen on")
	priority := fs.Int("priority", 40, "priority announced in nix-cache-info (lower is preferred)")
	upload := fs.Bool("upload", false, "accept 'nix copy --to http://…' into the first --from target (needs --credentials)")
	credentials := fs.String("credentials", "", "file of user:password lines that may upload (HTTP Basic)")
	accessLog := fs.Bool("access-log", true, "log every request")
	negativeTTL := fs.Duration("negative-ttl", 5*time.Second, "how long a missing path is remembered")
	cacheTTL := fs.Duration("cache-ttl", 10*time.Minute, "how long a found narinfo is served from memory")
	cacheSize := fs.Int("cache-size", 50000, "narinfos kept in memory")
	backendTimeout := fs.Duration("backend-timeout", 20*time.Second, "bound on each metadata request to a backend")
	maxBackend := fs.Int("max-backend-requests", 64, "concurrent requests to the backends")
	plainHTTP := fs.Bool("plain-http", false, "use plain HTTP for registries even if they are not on loopback")
	chunkSize := chunkSizeFlag(fs)
	registryAPI := fs.Bool("registry", false, "also serve the read-only OCI distribution API under /v2/, composing images from closures (needs write access to the --from targets holding the closures)")
	names := fs.String("names", "", "JSON file of friendly image names and meta-packages for --registry")
	maxLayers := fs.Int("max-layers", spec.DefaultMaxLayers, "most layers of a composed image")
	layerCompression := fs.String("layer-compression", "gzip", "layer compression of composed images: gzip or zstd")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, rest)
	}
	if *upload && *credentials == "" {
		return fmt.Errorf("%w: --upload needs --credentials: refusing to accept anonymous writes", errUsage)
	}
	if len(from) == 0 {
		from = append(from, "")
	}
	opts := substituter.Options{
		Priority: *priority, AccessLog: *accessLog, NegativeTTL: *negativeTTL, CacheTTL: *cacheTTL,
		CacheSize: *cacheSize, BackendTimeout: *backendTimeout, MaxBackendRequests: *maxBackend,
	}
	more := []targetOption{chunkSize.option()}
	if creds, err := envCredentials(); err != nil {
		return err
	} else if creds != nil {
		more = append(more, creds)
	}
	for i, f := range from {
		ref, t, err := openTarget(ctx, f, *plainHTTP, (*upload || *registryAPI) && i == 0, more...)
		if err != nil {
			return err
		}
		opts.Backends = append(opts.Backends, substituter.Backend{Name: ref.Base().String(), Target: t})
	}
	for _, f := range signKeys {
		k, err := narinfo.LoadSecretKey(f)
		if err != nil {
			return err
		}
		opts.SignKeys = append(opts.SignKeys, k)
	}
	if *registryAPI {
		comp, err := spec.ParseLayerCompression(*layerCompression)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		reg := &substituter.RegistryOptions{Image: image.Options{MaxLayers: *maxLayers, Compression: comp}}
		if *names != "" {
			if reg.Names, err = substituter.LoadNames(*names); err != nil {
				return err
			}
		}
		opts.Registry = reg
	} else if *names != "" {
		return fmt.Errorf("%w: --names needs --registry", errUsage)
	}
	if *upload {
		creds, err := substituter.LoadCredentials(*credentials)
		if err != nil {
			return err
		}
		opts.Upload = &substituter.UploadOptions{Credentials: creds}
	}
	srv, err := substituter.New(opts)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	for i, b := range opts.Backends {
		slog.Info("serving", "url", "http://"+ln.Addr().String(), "from", b.Name, "upload", *upload && i == 0)
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	slog.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
