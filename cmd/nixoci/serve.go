package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/nixoci/nixoci/image"
	"github.com/nixoci/nixoci/imageregistry"
	"github.com/nixoci/nixoci/internal/serving"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/source"
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
Each manifest is checked against the path it is read for; one that is not
(a tag or copied closure naming another path's manifest) is answered 502
and logged.

Serve vouches only for what it can verify: --sign-key adds serve's
signature to a narinfo only if a stored signature verifies against a
--trusted-key or serve's own key, which serve adds to every path uploaded
to it (--upload). Other paths are served with the signatures they have,
for Nix to judge: a path pushed unsigned by anyone with write access to
the registry is not made trusted. --sign-unverified signs everything
(only for registries no one but trusted writers can push to). See
SECURITY.md.

A backend failure is answered 502/503/504, never 404, because Nix caches
"not found" for an hour. /healthz checks the backends; /metrics is in the
Prometheus text format.

A registry far away costs a round trip per request, and Nix asks about one
path at a time, so serve works ahead of it:
  - When Nix asks for a path serve has not seen, serve fetches the rest of
    the closure it roots (its closure artifact is found through the
    referrers of the root's manifest or the closures read from the
    target, see --catalog-interval), or else the path's references, with
    up to --prefetch requests in flight. Nix's next narinfo requests are
    then answered from memory; those it makes while serve is still
    finding a closure wait for that search rather than each starting
    one. Cost: the request that reads the closure's index, whose entries
    carry every path's narinfo (format 2); one request per path for a
    format 1 closure or by references, which Nix would have made anyway.
  - Once a client substitutes (asks for a NAR), serve fetches into a local
    cache the NARs of the narinfos it asked for, and from then on (for
    30s after its last NAR request) the NAR of each narinfo it asks for, so
    its NAR requests are served from local disk (--blob-cache-size,
    default 2GiB, evicting the least recently used; NARs over a quarter of
    it are not cached); NARs of at most 256KiB are kept in memory instead
    (--blob-cache-memory, default 64MiB). Narinfo queries alone ('nix
    path-info') fetch no NAR. Cost: disk and memory up to the limits,
    the bandwidth of NARs a substituting client asked the narinfo of but
    did not fetch (a path another substituter supplied, say), and the
    CPU of copying every NAR: it pays only where a source is far. So by
    default (--nar-ahead auto) NARs are fetched ahead only from sources
    whose fastest answer among their latest 32 (NAR downloads until the
    first byte, upstream narinfos) took at least --nar-ahead-latency
    (default 3ms), or that have not answered yet: an image layout or a
    registry on the same host streams each NAR when asked, as with the
    cache off. Each source's decision is logged when it changes.
    --nar-ahead on fetches ahead from every source, off from none.
Copies of closures made with oras copy or crane copy carry no path tags;
serve finds their paths through the closures it reads from each target at
start and every --catalog-interval. While a closure cannot be read, a path
no closure read lists is answered 502 (the unread closure may hold it),
not 404.

With --upload and --credentials, 'nix copy --to http://HOST:PORT' stores
paths as 'nixoci push' would (Nix sends the credentials from its
netrc-file); without --upload every PUT is refused.

What serve stores (uploads, and paths pulled through with --upstream) is
recorded in closures of its own, per UTC day and serve: tags
uploaded.<YYYY-MM-DD>.<instance>.<n> and pulled.<YYYY-MM-DD>.<instance>.<n>,
each listing at most 128 paths stored that day with what of their
references the target holds, and a push record. 'nixoci gc' keeps what
they list, unless retention drops them ('gc --match "uploaded.*"
--keep-within 90d'). Paths are written every --record-interval (1m) and
when serve stops on SIGTERM; a restarted serve adds to its day's
records. Give each serve writing to one repository its own --instance.
See SPEC.md section 14.5 and docs/gc.md.

With --upstream URL (repeatable, asked in order after every --from
target) serve pulls through: a path no target has is asked of the
upstreams (http(s) binary caches such as https://cache.nixos.org, with
the client, retries and credentials of 'push --from-cache'), and served
only if one of its signatures verifies against an --upstream-key (name
the upstream's public key; --upstream-unverified opts out, loudly). Its
NAR is pulled once, however many clients ask, into the blob cache, which
clients read as it arrives; it is checked against FileHash, decompressed
and parsed strictly against NarHash, and only then stored unchanged in
the first --from target (NAR, narinfo, manifest, then the path's tag),
so the registry fills with what the machines use. As for the
registry, serve walks a path's references at the upstreams ahead of Nix
(up to --prefetch requests at once, at most 10,000 paths a walk, their
narinfos held within --cache-size), and fetches NARs ahead within the
blob cache. When a client
substitutes a path it asked for itself (a root), serve also pulls the
rest of its closure and stores it as a closure tagged pulled.<hash>, so
the next serve over the registry reads it in one request, and 'gc
--match "pulled.*" --keep-within 30d' keeps what was pulled lately (with
the records of each day's pulled paths, above). An
upstream failing for a path no target has is a 502/504, never a 404; one
without it is a miss; the targets' paths are served whatever the
upstreams do. /healthz adds a line on the upstreams, /healthz/upstreams
answers 503 while one does not answer. Upstream keys count as
--trusted-key: with --sign-key, serve signs what they signed. Needs the
blob cache (--blob-cache-size); NARs larger than it are served from the
upstream but not stored. See SPEC.md section 14 and docs/deploy.md.

With --registry, it is also a read-only OCI registry whose images are
composed on demand from stored closures: the repository name lists
closure tags (or names from --names) separated by '/', e.g.
'docker pull HOST:PORT/shell/hello:latest' gives the union of the closures
tagged shell and hello, one layer per store path, symlinks to their roots
in /. Layers are converted once, stored in the first --from target that
holds all of the name's closures, and reused by every later image; a
name whose layers exist answers at once. Names listing the same closures
('a/b', 'b/a', 'a/a/b') are one image. Each repository has the one tag
latest; a manifest or blob is served only under a name whose image
reaches it. An image given no entrypoint or cmd (--names) runs its first
closure root's main program (bin/<name without version>), else the only
program in /bin, else /bin/sh.

What one client can hold of serve is bounded (SECURITY.md says what each
limit protects against): --header-timeout for a request's headers,
--idle-timeout for keep-alive connections, --min-body-rate and
--body-timeout for NAR and upload bodies (time waiting on a registry does
not count; a download above the rate is never cut), --max-connections in
all and --max-client-connections from one IP address (those past them are
answered 503 with Retry-After; Nix retries). Each client may cause 10
bcrypt password checks, then one per 10s (past that: 429), on at most half
the cores; a password checked in the last 10 minutes, right or wrong,
costs none. Behind a reverse proxy, name it with --trusted-proxy (its
X-Forwarded-For then tells clients apart; never believed from others) and
raise --max-client-connections or give 0: it sees only the proxy.

With --tls-cert and --tls-key, serve speaks HTTPS, HTTP/2 to clients
that offer it (Nix does over https, many requests on one connection)
and HTTP/1.1 to others; use it whenever --upload passwords or
substitutes cross a network. The files are read again within a second
of changing (certbot, cert-manager), a pair that does not load is
logged and the previous one kept. Over HTTP/2 each request is held to
--min-body-rate by itself, and --max-streams bounds the requests on one
connection. Nix trusts the server's CA from the system store, or from
ssl-cert-file in nix.conf (NIX_SSL_CERT_FILE).

Registry credentials come from the docker config file ($DOCKER_CONFIG,
with its credsStore and credHelpers), or, in containers, from the
environment: NIXOCI_REGISTRY_USERNAME and NIXOCI_REGISTRY_PASSWORD are
used for every --from registry. Uploads and composed layers larger
than --chunk-size are sent to registries in chunks.

Examples:
  nixoci serve --from oci:/srv/nix-oci --sign-key /etc/nix/cache.sec --trusted-key /etc/nix/ci.pub
  nixoci serve --from oci:/srv/nix-oci --registry --names /etc/nixoci/names.json
  nixoci serve --from ghcr.io/me/nix --from oci:/srv/local --listen 0.0.0.0:8080
  nixoci serve --from ghcr.io/me/nix --listen 0.0.0.0:443 --tls-cert /etc/nixoci/tls.crt --tls-key /etc/nixoci/tls.key
  nixoci serve --from 127.0.0.1:5000/cache --upload --credentials /etc/nixoci/creds
  nixoci serve --from ghcr.io/me/nix --upstream https://cache.nixos.org \
    --upstream-key cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=
`

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseServeFlags(args, stdout)
	if err != nil {
		return err
	}
	var certs *serving.CertFiles
	if f.tlsCert != "" {
		if certs, err = serving.LoadCertFiles(f.tlsCert, f.tlsKey, slog.Default()); err != nil {
			return err
		}
	}
	backends, err := openServeBackends(ctx, f)
	if err != nil {
		return err
	}
	var accessLog *serving.AccessLog
	if f.accessLog {
		accessLog = serving.NewAccessLog(stderr)
	}
	blobs, err := openBlobCache(f, backends)
	if err != nil {
		return err
	}
	if blobs != nil {
		defer blobs.Close()
	}
	h, cache, err := serveHandler(f, backends, accessLog, blobs)
	if err == nil {
		err = listenAndServe(ctx, f.listen, f.limits, certs, h, backends.Metrics(), func(addr string) {
			scheme := "http://"
			if certs != nil {
				scheme = "https://"
			}
			for i, b := range backends.List() {
				slog.Info("serving", "url", scheme+addr, "from", b.Name, "upload", f.upload && i == 0)
			}
			for _, u := range f.upstreams {
				if bc, err := source.OpenBinaryCache(u, nil); err == nil {
					slog.Info("pulling through", "upstream", bc.URL(), "into", backends.List()[0].Name, "verified", !f.upstreamUnverified)
				}
			}
			slog.Info("limits", "clients", f.limits.String())
			if f.upload || len(f.upstreams) > 0 {
				slog.Info("recording what is stored", "instance", f.instance, "interval", f.recordInterval)
			}
		})
		// Requests have ended: the records of what they stored are
		// written now (SPEC.md section 14.5).
		if cerr := cache.Close(); cerr != nil {
			slog.Error("closing the server", "err", cerr)
			err = errors.Join(err, cerr)
		}
	}
	if accessLog != nil {
		if cerr := accessLog.Close(); cerr != nil {
			slog.Error("writing the access log", "err", cerr)
		}
	}
	return err
}

// serveFlags are the flags of nixoci serve.
type serveFlags struct {
	from, signKeys        stringList
	trustedKeys           stringList
	signUnverified        bool
	listen                string
	priority              int
	upload                bool
	credentials           string
	accessLog             bool
	negativeTTL, cacheTTL time.Duration
	cacheSize             int
	backendTimeout        time.Duration
	maxBackend            int
	plainHTTP             bool
	chunkSize             *byteSize
	registry              bool
	names                 string
	maxLayers             int
	layerCompression      string
	prefetch              int
	catalogInterval       time.Duration
	blobCacheSize         string
	blobCacheMemory       string
	blobCacheDir          string
	narAhead              string
	narAheadMode          substituter.NARAhead
	narAheadLatency       time.Duration
	redirectBlobs         bool
	upstreams             stringList
	upstreamKeys          stringList
	upstreamUnverified    bool
	limits                serving.Limits
	minBodyRate           byteSize
	trustedProxies        stringList
	composeMax            int
	composeEphemeral      bool
	instance              string
	recordInterval        time.Duration
	tlsCert, tlsKey       string
}

func parseServeFlags(args []string, stdout io.Writer) (*serveFlags, error) {
	f := &serveFlags{}
	fs := newFlagSet("serve", serveHelp, stdout)
	fs.Var(&f.from, "from", "target to serve from, oci:DIR or HOST[:PORT]/REPO (repeatable, tried in order; default: the local store)")
	fs.Var(&f.signKeys, "sign-key", "add a signature made with this Nix secret key file to the narinfos serve vouches for: signed by a --trusted-key, by this key, or uploaded to serve (repeatable; see --help)")
	fs.Var(&f.trustedKeys, "trusted-key", "a public key, as name:base64 or a file of them, whose signatures make serve add its own (repeatable)")
	fs.BoolVar(&f.signUnverified, "sign-unverified", false, "sign every narinfo the --from targets hold, verified or not: whoever can push to them gets paths trusted by every client (see SECURITY.md)")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8080", "address to listen on")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "serve HTTPS (HTTP/2 and HTTP/1.1) with this PEM certificate chain; read again when the file changes (with --tls-key)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "the PEM private key of --tls-cert")
	fs.IntVar(&f.priority, "priority", 40, "priority announced in nix-cache-info (lower is preferred)")
	fs.BoolVar(&f.upload, "upload", false, "accept 'nix copy --to http://…' into the first --from target (needs --credentials)")
	fs.StringVar(&f.credentials, "credentials", "", "htpasswd file of the users who may upload (HTTP Basic), bcrypt hashes only as 'htpasswd -B' writes; plaintext or other schemes are refused at startup")
	fs.BoolVar(&f.accessLog, "access-log", true, "log every request")
	fs.DurationVar(&f.negativeTTL, "negative-ttl", 5*time.Second, "how long a missing path is remembered")
	fs.DurationVar(&f.cacheTTL, "cache-ttl", 10*time.Minute, "how long what serve found is answered from memory: a narinfo, where a NAR is, and with --registry the image a name composes")
	fs.IntVar(&f.cacheSize, "cache-size", 50000, "entries of each in-memory cache: narinfo lookups (found or not), NAR locations, NAR files verified whole")
	fs.DurationVar(&f.backendTimeout, "backend-timeout", 20*time.Second, "bound on each metadata request to a backend")
	fs.IntVar(&f.maxBackend, "max-backend-requests", 64, "concurrent requests to the backends")
	fs.BoolVar(&f.plainHTTP, "plain-http", false, "use plain HTTP for registries even if they are not on loopback")
	f.chunkSize = chunkSizeFlag(fs)
	fs.BoolVar(&f.registry, "registry", false, "also serve the read-only OCI distribution API under /v2/, composing images from closures (needs write access to the --from targets holding the closures)")
	fs.StringVar(&f.names, "names", "", "JSON file of friendly image names and meta-packages for --registry")
	fs.IntVar(&f.prefetch, "prefetch", 32, "requests in flight fetching narinfos ahead of Nix: a closure's paths when Nix asks for its root, else a path's references (0: off)")
	fs.DurationVar(&f.catalogInterval, "catalog-interval", time.Minute, "how often the closures of each --from target are read, so closures copied without their path tags (oras copy, crane copy) are served (0: never; then they are found only from their roots)")
	fs.StringVar(&f.blobCacheMemory, "blob-cache-memory", "64MiB", "memory for the NARs of at most 256KiB among those fetched ahead (most paths of a system closure), kept there rather than on disk; 0: all on disk")
	fs.StringVar(&f.blobCacheSize, "blob-cache-size", "2GiB", "disk for NARs fetched ahead of Nix when it asks for their narinfo, e.g. 512MiB or 10GiB; 0: off, each NAR request then waits on the backend (see --help)")
	fs.StringVar(&f.narAhead, "nar-ahead", "auto", "fetch NARs ahead of a substituting client into the NAR cache: auto (from the sources whose fastest recent answer took at least --nar-ahead-latency), on (from every source) or off")
	fs.DurationVar(&f.narAheadLatency, "nar-ahead-latency", substituter.DefaultNARAheadLatency, "with --nar-ahead auto, how far a --from target or --upstream must be for its NARs to be fetched ahead: the fastest of its latest answers (NAR downloads until their first byte, upstream narinfos)")
	fs.BoolVar(&f.redirectBlobs, "redirect-blobs", false, "answer NAR requests with the registry's redirect to its storage when it gives one (S3-backed distribution, GHCR, ECR), so NAR bytes never pass through serve; the NAR cache is then not filled")
	fs.StringVar(&f.blobCacheDir, "blob-cache-dir", "", "directory of the NAR cache, emptied at start and exit (default: a new one under $TMPDIR)")
	fs.Var(&f.upstreams, "upstream", "binary cache (http(s)://… or file:///DIR) to pull paths no --from target has through, storing them in the first --from target (repeatable, asked in order; see --help)")
	fs.Var(&f.upstreamKeys, "upstream-key", "public key of the upstreams, as name:base64 or a file of them: an upstream narinfo is served only if one of its signatures verifies against one (repeatable; also a --trusted-key)")
	fs.BoolVar(&f.upstreamUnverified, "upstream-unverified", false, "serve and store upstream paths whatever their signatures (logged loudly at start; only for upstreams nobody else can write to)")
	fs.IntVar(&f.maxLayers, "max-layers", spec.DefaultMaxLayers, "most layers of a composed image")
	fs.StringVar(&f.layerCompression, "layer-compression", "gzip", "layer compression of composed images: gzip or zstd")
	fs.DurationVar(&f.limits.HeaderTimeout, "header-timeout", serving.DefaultHeaderTimeout, "time a client has to send a request's headers (0: none)")
	fs.DurationVar(&f.limits.IdleTimeout, "idle-timeout", serving.DefaultIdleTimeout, "keep-alive connections idle this long are closed (0: never)")
	f.minBodyRate = serving.DefaultMinBodyRate
	fs.Var(&f.minBodyRate, "min-body-rate", "bytes per second a client must read a response (a NAR, say) or send an upload at, on average: one that falls --body-timeout behind is cut (0: no minimum)")
	fs.DurationVar(&f.limits.BodyTimeout, "body-timeout", serving.DefaultBodyTimeout, "how far behind --min-body-rate a body may fall, and the longest a client may stall reading or sending one")
	fs.IntVar(&f.limits.MaxConnections, "max-connections", serving.DefaultMaxConnections, "connections open at once; those past it are answered 503 with Retry-After (0: no bound)")
	fs.IntVar(&f.limits.MaxClientConnections, "max-client-connections", serving.DefaultMaxClientConnections, "connections open at once from one IP address (IPv6: one /64); behind a reverse proxy all are the proxy's: raise it or give 0 (no bound)")
	fs.IntVar(&f.limits.MaxStreams, "max-streams", serving.DefaultMaxStreams, "requests in flight on one HTTP/2 connection (with --tls-cert); a client's requests in flight are at most --max-client-connections times this")
	fs.Var(&f.trustedProxies, "trusted-proxy", "address or CIDR block of a reverse proxy whose X-Forwarded-For header names the client, for what is counted per client (password checks, NARs fetched ahead); repeatable; by default X-Forwarded-For is ignored")
	fs.IntVar(&f.composeMax, "compose-max", imageregistry.DefaultMaxCompositions, "images composed at once by --registry; a request needing one more is answered 503 with Retry-After")
	fs.BoolVar(&f.composeEphemeral, "compose-ephemeral", false, "store images composed by --registry without a compose.* tag, so that names asked for once leave nothing a collector keeps (layers are stored and reused all the same)")
	fs.StringVar(&f.instance, "instance", "", "name of this serve in the tags of its records of what it stores (uploaded.<day>.<instance>.<n>, pulled.…); each serve writing to one repository needs its own (default: the host name, lower case, other characters than a-z, 0-9 as '-')")
	fs.DurationVar(&f.recordInterval, "record-interval", substituter.DefaultRecordInterval, "how often the paths stored are written to their records; keep it well below the --grace of 'nixoci gc' (default 1h), which deletes what is not recorded by then")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return nil, err
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("%w: unexpected arguments %q", errUsage, rest)
	}
	if f.recordInterval <= 0 {
		return nil, fmt.Errorf("%w: --record-interval must be positive: what serve stores must be recorded, or a garbage collection deletes it", errUsage)
	}
	if f.instance == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("naming this serve's records (give --instance): %w", err)
		}
		f.instance = spec.RecordInstance(host)
	} else if !spec.ValidInstance(f.instance) {
		return nil, fmt.Errorf("%w: --instance %q: want at most %d of a-z, 0-9 and inner '-', e.g. %q", errUsage, f.instance, spec.MaxInstanceLen, spec.RecordInstance(f.instance))
	}
	if f.upload && f.credentials == "" {
		return nil, fmt.Errorf("%w: --upload needs --credentials: refusing to accept anonymous writes", errUsage)
	}
	if f.narAheadMode, err = substituter.ParseNARAhead(f.narAhead); err != nil {
		return nil, fmt.Errorf("%w: --nar-ahead %v", errUsage, err)
	}
	if f.narAheadLatency <= 0 {
		return nil, fmt.Errorf("%w: --nar-ahead-latency must be above 0 (--nar-ahead on fetches from every source)", errUsage)
	}
	if f.names != "" && !f.registry {
		return nil, fmt.Errorf("%w: --names needs --registry", errUsage)
	}
	if len(f.upstreams) == 0 && (len(f.upstreamKeys) > 0 || f.upstreamUnverified) {
		return nil, fmt.Errorf("%w: --upstream-key and --upstream-unverified need --upstream", errUsage)
	}
	if len(f.upstreams) > 0 && len(f.upstreamKeys) == 0 && !f.upstreamUnverified {
		return nil, fmt.Errorf("%w: --upstream needs --upstream-key (the upstreams' public keys, e.g. cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=), or --upstream-unverified to serve what they send unchecked", errUsage)
	}
	if len(f.upstreams) > 0 && f.redirectBlobs {
		return nil, fmt.Errorf("%w: --upstream with --redirect-blobs: NARs pulled through pass through serve's blob cache", errUsage)
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return nil, fmt.Errorf("%w: --tls-cert and --tls-key go together", errUsage)
	}
	if f.limits.MaxStreams < 1 {
		return nil, fmt.Errorf("%w: --max-streams must be at least 1", errUsage)
	}
	if len(f.from) == 0 {
		f.from = append(f.from, "")
	}
	f.limits.MinBodyRate = int64(f.minBodyRate)
	if f.limits.HeaderTimeout < 0 || f.limits.IdleTimeout < 0 || f.limits.BodyTimeout < 0 || f.limits.MinBodyRate < 0 ||
		f.limits.MaxConnections < 0 || f.limits.MaxClientConnections < 0 {
		return nil, fmt.Errorf("%w: a server limit is negative; 0 turns it off", errUsage)
	}
	for _, v := range []*time.Duration{&f.limits.HeaderTimeout, &f.limits.IdleTimeout, &f.limits.BodyTimeout} {
		if *v == 0 {
			*v = -1 // serving.Limits: negative is off
		}
	}
	for _, v := range []*int{&f.limits.MaxConnections, &f.limits.MaxClientConnections} {
		if *v == 0 {
			*v = -1
		}
	}
	if f.limits.MinBodyRate == 0 {
		f.limits.MinBodyRate = -1
	}
	return f, nil
}

// openServeBackends opens the --from targets; the first is opened for
// writing if uploads or composed images are stored there.
func openServeBackends(ctx context.Context, f *serveFlags) (*serving.Backends, error) {
	var list []serving.Backend
	more := []targetOption{f.chunkSize.option()}
	if creds, err := envCredentials(); err != nil {
		return nil, err
	} else if creds != nil {
		more = append(more, creds)
	}
	for i, from := range f.from {
		ref, t, err := openTarget(ctx, from, f.plainHTTP, (f.upload || f.registry || len(f.upstreams) > 0) && i == 0, more...)
		if err != nil {
			return nil, err
		}
		list = append(list, serving.Backend{Name: ref.Base().String(), Target: t})
	}
	return serving.NewBackends(list, serving.BackendOptions{
		Timeout: f.backendTimeout, MaxRequests: f.maxBackend, CacheSize: f.cacheSize, CacheTTL: f.cacheTTL,
	})
}

// serveHandler makes the binary-cache server and, with --registry, the
// image registry, on the same backends and access log (nil: none): the
// registry answers /v2/, the binary cache everything else.
//
// The binary-cache server is returned too, to be closed once requests
// have ended.
func serveHandler(f *serveFlags, backends *serving.Backends, accessLog *serving.AccessLog, blobs *serving.BlobCache) (http.Handler, *substituter.Server, error) {
	var proxies []netip.Prefix
	for _, p := range f.trustedProxies {
		prefix, err := serving.ParseTrustedProxy(p)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: --trusted-proxy %q: want an IP address or a CIDR block", errUsage, p)
		}
		proxies = append(proxies, prefix)
	}
	opts := substituter.Options{
		BlobCache: blobs, Clients: serving.NewClients(proxies),
		Backends: backends, Priority: f.priority, AccessLog: accessLog != nil, AccessLogTo: accessLog,
		NegativeTTL: f.negativeTTL, CacheTTL: f.cacheTTL, CacheSize: f.cacheSize,
		Prefetch: f.prefetch, CatalogInterval: f.catalogInterval, RedirectBlobs: f.redirectBlobs,
		Records: &substituter.RecordOptions{Instance: f.instance, Interval: f.recordInterval},
	}
	if f.prefetch == 0 {
		opts.Prefetch = -1
	}
	opts.NARAhead, opts.NARAheadLatency = f.narAheadMode, f.narAheadLatency
	if f.catalogInterval == 0 {
		opts.CatalogInterval = -1
	}
	for _, file := range f.signKeys {
		k, err := narinfo.LoadSecretKey(file)
		if err != nil {
			return nil, nil, err
		}
		opts.SignKeys = append(opts.SignKeys, k)
	}
	for _, v := range f.trustedKeys {
		keys, err := trustedKeys(v)
		if err != nil {
			return nil, nil, err
		}
		opts.TrustedKeys = append(opts.TrustedKeys, keys...)
	}
	if f.signUnverified {
		if len(opts.SignKeys) == 0 {
			return nil, nil, fmt.Errorf("%w: --sign-unverified needs --sign-key", errUsage)
		}
		opts.SignUnverified = true
		slog.Warn("--sign-unverified: signing every path the targets hold, whatever its signatures; anyone who can push to them gets paths trusted by every client of this server", "from", strings.Join(f.from, " "))
	}
	if len(f.upstreams) > 0 {
		pull, err := pullOptions(f, blobs)
		if err != nil {
			return nil, nil, err
		}
		opts.Pull = pull
	}
	if f.upload {
		creds, err := substituter.LoadCredentials(f.credentials)
		if err != nil {
			return nil, nil, err
		}
		opts.Upload = &substituter.UploadOptions{Credentials: creds}
	}
	cache, err := substituter.New(opts)
	if err != nil || !f.registry {
		return cache, cache, err
	}
	comp, err := spec.ParseLayerCompression(f.layerCompression)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	ropts := imageregistry.Options{
		Backends: backends, AccessLog: accessLog != nil, AccessLogTo: accessLog, CacheTTL: f.cacheTTL,
		Image:           image.Options{MaxLayers: f.maxLayers, Compression: comp},
		MaxCompositions: f.composeMax, Ephemeral: f.composeEphemeral,
	}
	if f.names != "" {
		if ropts.Names, err = imageregistry.LoadNames(f.names); err != nil {
			return nil, nil, err
		}
	}
	reg, err := imageregistry.New(ropts)
	if err != nil {
		return nil, nil, err
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == "/v2" || strings.HasPrefix(p, "/v2/") {
			reg.ServeHTTP(w, r)
			return
		}
		cache.ServeHTTP(w, r)
	}), cache, nil
}

// pullOptions makes the pull-through options of --upstream,
// --upstream-key and --upstream-unverified.
func pullOptions(f *serveFlags, blobs *serving.BlobCache) (*substituter.PullOptions, error) {
	if blobs == nil {
		return nil, fmt.Errorf("%w: --upstream needs the blob cache (--blob-cache-size above 0): NARs pulled through are verified there before they are stored", errUsage)
	}
	opts := &substituter.PullOptions{Unverified: f.upstreamUnverified}
	for _, u := range f.upstreams {
		bc, err := source.OpenBinaryCache(u, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: --upstream: %v", errUsage, err)
		}
		opts.Upstreams = append(opts.Upstreams, substituter.Upstream{Name: bc.URL(), Cache: bc})
	}
	for _, v := range f.upstreamKeys {
		keys, err := publicKeys("--upstream-key", v)
		if err != nil {
			return nil, err
		}
		opts.Keys = append(opts.Keys, keys...)
	}
	if opts.Unverified {
		for _, up := range opts.Upstreams {
			slog.Warn("--upstream-unverified: serving and storing what this upstream sends WITHOUT checking its signatures; whoever can change its narinfos or the way to it decides what lands in the registry", "upstream", up.Name)
		}
	}
	return opts, nil
}

// trustedKeys reads a --trusted-key value: a key as name:base64, or a
// file of them.
func trustedKeys(v string) ([]narinfo.PublicKey, error) { return publicKeys("--trusted-key", v) }

// publicKeys reads the value of flag: a key as name:base64, or a file of
// them.
func publicKeys(flag, v string) ([]narinfo.PublicKey, error) {
	if k, err := narinfo.ParsePublicKey(v); err == nil {
		return []narinfo.PublicKey{k}, nil
	}
	keys, err := narinfo.LoadPublicKeys(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is neither a public key (name:base64) nor a file of them: %v", errUsage, flag, err)
	}
	return keys, nil
}

// openBlobCache makes the NAR cache of --blob-cache-size (nil if 0) and
// --blob-cache-memory.
func openBlobCache(f *serveFlags, backends *serving.Backends) (*serving.BlobCache, error) {
	size, err := parseSize(f.blobCacheSize)
	if err != nil {
		return nil, fmt.Errorf("%w: --blob-cache-size: %v", errUsage, err)
	}
	if size == 0 {
		return nil, nil
	}
	mem, err := parseSize(f.blobCacheMemory)
	if err != nil {
		return nil, fmt.Errorf("%w: --blob-cache-memory: %v", errUsage, err)
	}
	if mem == 0 {
		mem = -1 // every blob on disk
	}
	return serving.NewBlobCache(backends, serving.BlobCacheOptions{Dir: f.blobCacheDir, MaxBytes: size, MemoryBytes: mem})
}

// listenAndServe serves h on addr within limits, over TLS with certs
// (nil: plain HTTP), counting into m, until ctx ends, then shuts down,
// letting requests in progress finish for up to 30s. ready is called
// once the listener is open.
func listenAndServe(ctx context.Context, addr string, limits serving.Limits, certs *serving.CertFiles, h http.Handler, m *serving.Metrics, ready func(addr string)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	hs := limits.Server(h, m, slog.Default())
	var limited net.Listener
	if certs != nil {
		hs.TLSConfig = certs.TLSConfig()
		limited = limits.TLSListener(ln, hs.TLSConfig, m, slog.Default())
	} else {
		limited = limits.Listener(ln, m, slog.Default())
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(limited) }()
	ready(ln.Addr().String())
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
