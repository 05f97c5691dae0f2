package substituter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/internal/serving"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// The resolver turns a hash part into a store path Nix may be given: it
// asks its sources in order (each backend by tag, then each backend's
// closures), checks what the first to find the path found against the
// hash asked for and against its NAR, renders the narinfo under the trust
// policy, and caches the answer (found for CacheTTL, not found for
// NegativeTTL; failures are not cached). Concurrent lookups of a hash,
// Nix's and the prefetcher's alike, share one.
//
// A source that finds something that is not what it was claimed to be
// (a tag or closure entry naming a manifest of another path, an entry
// whose narinfo is not its manifest's, a malformed artifact) fails: it
// is logged naming the artifact and the source, counted
// (nixoci_refused_artifacts_total), and, unless a later source has the
// path, answered as a backend failure (502), never as absence.

// pathEntry is a store path as served: what a source found, and the
// narinfo text with the server's signatures if the policy vouches for it.
type pathEntry struct {
	Found
	source string // the source that found it
	text   []byte
	signed bool
}

// errNotFound: no source has the path.
var errNotFound = errors.New("not found")

type resolver struct {
	sources []Source
	cache   *serving.LRU[*pathEntry] // hash part -> entry (nil entry: not found)
	flight  singleflight.Group
	policy  trustPolicy
	timeout time.Duration // bound on one resolution
	ttl     time.Duration // of a found path
	negTTL  time.Duration // of "not found"
	log     *slog.Logger
	// found is called with every path found, before it is cached (to
	// remember where its NAR is).
	found func(*pathEntry)

	refused *prometheus.CounterVec
	signing *prometheus.CounterVec
}

func newResolver(opts Options, cache *serving.LRU[*pathEntry], timeout time.Duration) *resolver {
	return &resolver{
		cache:   cache,
		policy:  newTrustPolicy(opts),
		timeout: timeout,
		ttl:     opts.CacheTTL,
		negTTL:  opts.NegativeTTL,
		log:     opts.Logger,
		found:   func(*pathEntry) {},
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixoci_refused_artifacts_total",
			Help: "Artifacts a source found for a narinfo that were refused, by reason: claim (another path than claimed), malformed (not a valid nixoci artifact), too_large, corrupt (content not matching its digest).",
		}, []string{"reason"}),
		signing: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixoci_narinfo_signing_total",
			Help: "Narinfos rendered (cache misses), by whether the server added its signatures (signed) or served them with only their stored ones (unverified: no stored signature verifies against a trusted key). Without signing keys, none are counted.",
		}, []string{"decision"}),
	}
}

func (r *resolver) collectors() []prometheus.Collector {
	return []prometheus.Collector{r.refused, r.signing}
}

// cached returns the entry of hash if the cache holds one (nil: known
// not found).
func (r *resolver) cached(hash string) (*pathEntry, bool) { return r.cache.Get(hash) }

// resolve finds the path with hash part hash through the sources (or the
// cache), sharing the work with concurrent callers. Not found is
// errNotFound. It reports whether the answer was shared with another
// caller.
func (r *resolver) resolve(ctx context.Context, hash string) (*pathEntry, bool, error) {
	return r.shared(ctx, hash, r.find)
}

// shared runs fetch for hash once for all concurrent callers, detached
// from the first caller (others may wait on it), and caches the answer:
// found for the TTL, not found (errNotFound) for the negative TTL.
// Failures are not cached. It reports whether the answer was shared.
func (r *resolver) shared(ctx context.Context, hash string, fetch func(context.Context, string) (*pathEntry, error)) (*pathEntry, bool, error) {
	v, err, shared := r.flight.Do(hash, func() (any, error) {
		if e, ok := r.cache.Get(hash); ok {
			return e, nil // fetched while this caller waited to start
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.timeout)
		defer cancel()
		e, err := fetch(ctx, hash)
		switch {
		case errors.Is(err, errNotFound):
			r.cache.Put(hash, nil, r.negTTL)
			return (*pathEntry)(nil), nil
		case err != nil:
			return nil, err
		}
		r.found(e)
		r.cache.Put(hash, e, r.ttl)
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

// find asks the sources in order; the first that finds the path
// answers. Failures of sources before it are logged if they refused an
// artifact; if none finds it, they are the error, and only "not found"
// from every source is errNotFound.
func (r *resolver) find(ctx context.Context, hash string) (*pathEntry, error) {
	var errs []error
	for _, src := range r.sources {
		f, err := src.Find(ctx, hash)
		if isNotFound(err) {
			continue
		}
		var e *pathEntry
		if err == nil {
			e, err = r.entry(hash, src.Name(), f)
		}
		if err != nil {
			r.count(src.Name(), hash, err)
			errs = append(errs, err)
			continue
		}
		return e, nil
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return nil, errNotFound
}

// count counts and logs a source's refusal of what it found.
func (r *resolver) count(source, hash string, err error) {
	reason := ""
	switch {
	case errors.Is(err, artifact.ErrClaimMismatch):
		reason = "claim"
	case errors.Is(err, artifact.ErrTooLarge):
		reason = "too_large"
	case errors.Is(err, artifact.ErrNotArtifact):
		reason = "malformed"
	case errors.Is(err, artifact.ErrHashMismatch):
		reason = "corrupt"
	default:
		return // a failure to read, not a refusal
	}
	r.refused.WithLabelValues(reason).Inc()
	r.log.Error("artifact refused", "source", source, "hash", hash, "reason", reason, "err", err)
}

// entry checks what a source found for hash and renders it: the path
// must have that hash part, and its narinfo must name its NAR (FileHash
// its digest, FileSize its size, Compression its media type, URL where
// serve answers it), whatever the source.
func (r *resolver) entry(hash, source string, f Found) (*pathEntry, error) {
	if err := checkFound(hash, f); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	text, signed, err := r.policy.render(f.Artifact.Info)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", source, f.Artifact.Info.StorePath, err)
	}
	if len(r.policy.sign) > 0 {
		decision := "unverified"
		if signed {
			decision = "signed"
		} else {
			r.log.Info("served without the server's signature: no stored signature verifies against a trusted key",
				"path", f.Artifact.Info.StorePath, "manifest", f.Artifact.Manifest.Digest.String(), "source", source)
		}
		r.signing.WithLabelValues(decision).Inc()
	}
	return &pathEntry{Found: f, source: source, text: text, signed: signed}, nil
}

// checkFound checks a found path against the hash asked for and its NAR.
func checkFound(hash string, f Found) error {
	info := f.Artifact.Info
	if info == nil || f.NAR == nil {
		return fmt.Errorf("%s: found without narinfo or NAR: %w", hash, artifact.ErrNotArtifact)
	}
	if spec.PathTag(info.StorePath) != hash {
		return fmt.Errorf("asked for %s, found %s: %w", hash, info.StorePath, artifact.ErrClaimMismatch)
	}
	nar := f.NAR.Blob()
	comp, known := spec.CompressionOfMediaType(nar.MediaType)
	fileHex, err := narinfo.HashDigestHex(info.FileHash)
	switch {
	case err != nil || fileHex != nar.Digest.Encoded() || info.FileSize != uint64(nar.Size):
		return fmt.Errorf("%s: narinfo names a NAR of FileHash %s, FileSize %d; its NAR is %s, %d bytes: %w", info.StorePath, info.FileHash, info.FileSize, nar.Digest, nar.Size, artifact.ErrClaimMismatch)
	case !known || string(comp) != info.Compression:
		return fmt.Errorf("%s: narinfo says Compression %s, its NAR is %s: %w", info.StorePath, info.Compression, nar.MediaType, artifact.ErrClaimMismatch)
	case info.URL != spec.NarURL(nix32Of(info.FileHash), comp):
		return fmt.Errorf("%s: narinfo URL %s is not where its NAR is served: %w", info.StorePath, info.URL, artifact.ErrClaimMismatch)
	}
	return nil
}

// nix32Of is the nix-base32 digest of a valid hash, without its prefix.
func nix32Of(hash string) string {
	h, _ := narinfo.NormaliseHash(hash)
	return strings.TrimPrefix(h, "sha256:")
}
