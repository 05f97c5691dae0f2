package substituter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/internal/serving"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/source"
	"github.com/nixoci/nixoci/spec"
)

// Upstream is a binary cache the server pulls through (SPEC.md section
// 14): asked, after every backend, for the paths no backend has.
type Upstream struct {
	// Name names it in logs, errors and metrics; it must not hold
	// credentials. Default: the cache's URL without them.
	Name string
	// Cache reads it, with the client, timeouts, retries, proxies and
	// credentials of `push --from-cache`.
	Cache *source.BinaryCache

	latency *serving.Latency // of its narinfo answers; set by newPuller
}

// DefaultMaxUpstreamNAR is the default PullOptions.MaxNARSize.
const DefaultMaxUpstreamNAR = 64 << 30

// errUnverified: an upstream narinfo carries no signature by an upstream
// key.
var errUnverified = errors.New("no signature verifies against an --upstream-key")

// errUpstreamNarInfo: an upstream narinfo nixoci does not serve (not of
// the path asked for, another store directory, a compression it does not
// store, a URL leaving the cache, sizes out of bounds).
var errUpstreamNarInfo = errors.New("upstream narinfo refused")

// upstreamSource finds paths in one upstream, after every backend source.
type upstreamSource struct {
	p  *puller
	up *Upstream
}

func (u upstreamSource) Name() string { return "upstream " + u.up.Name }

// Find asks the upstream for the narinfo of hash and checks it (see
// checkUpstream). An upstream without it (404, 403, 410) is ErrNotFound,
// remembered for the negative TTL like any absence; any other failure
// (5xx, a timeout, a refused narinfo) is an error the server answers 5xx.
func (u upstreamSource) Find(ctx context.Context, hash string) (Found, error) {
	start := time.Now()
	info, err := u.up.Cache.NarInfoOf(ctx, hash)
	if err == nil || errors.Is(err, source.ErrNotInCache) {
		u.up.latency.Observe(time.Since(start))
	}
	switch {
	case errors.Is(err, source.ErrNotInCache):
		u.p.countNarInfo(u.up, "not_found")
		return Found{}, fmt.Errorf("%s: %w", u.Name(), ErrNotFound)
	case err != nil:
		u.p.countNarInfo(u.up, "failed")
		return Found{}, err
	}
	served, err := u.p.check(info, hash)
	if err != nil {
		u.p.countNarInfo(u.up, "refused")
		err = fmt.Errorf("%s: %s.narinfo (%s): %w", u.Name(), hash, info.StorePath, err)
		u.p.s.log.Error("upstream narinfo refused", "upstream", u.up.Name, "path", info.StorePath, "err", err)
		return Found{}, err
	}
	art, _, _, err := artifact.NewPathArtifact(served)
	if err != nil {
		u.p.countNarInfo(u.up, "refused")
		return Found{}, fmt.Errorf("%s: %s: %w: %w", u.Name(), info.StorePath, errUpstreamNarInfo, err)
	}
	u.p.countNarInfo(u.up, "found")
	return Found{Artifact: art, NAR: upstreamNAR{up: u.up, info: art.Info, url: info.URL, desc: art.NAR}}, nil
}

// check checks an upstream's narinfo for hash and returns it as served
// and stored: signatures unchanged, URL where serve answers its NAR
// (nar/<FileHash>.<ext>, as `push --from-cache` stores it), FileHash
// and FileSize those of the NAR itself for an uncompressed one that
// leaves them out.
func (p *puller) check(info *narinfo.NarInfo, hash string) (*narinfo.NarInfo, error) {
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", errUpstreamNarInfo, fmt.Sprintf(format, args...))
	}
	if info.HashPart() != hash {
		return nil, refuse("describes %s, not a path with hash part %s", info.StorePath, hash)
	}
	if dir := info.StoreDir(); dir != p.s.opts.StoreDir {
		return nil, refuse("store directory %s, this server's is %s", dir, p.s.opts.StoreDir)
	}
	if !p.opts.Unverified && !narinfo.VerifyAny(info, p.opts.Keys) {
		return nil, fmt.Errorf("%w (signed by: %s)", errUnverified, sigNames(info.Sigs))
	}
	comp, err := spec.ParseCompression(info.Compression)
	if err != nil || info.Compression == "" {
		return nil, refuse("Compression %q: nixoci stores NARs compressed with xz, zstd or none", info.Compression)
	}
	if err := source.CheckNarURL(info.URL); err != nil {
		return nil, refuse("%v", err)
	}
	out := *info
	out.Sigs = slices.Clone(info.Sigs)
	if comp == spec.CompressionNone {
		// The file is the NAR: its hash and size are the NAR's.
		if out.FileHash == "" && out.FileSize == 0 {
			out.FileHash, out.FileSize = out.NarHash, out.NarSize
		}
		if h, _ := narinfo.NormaliseHash(out.FileHash); h != out.NarHash || out.FileSize != out.NarSize {
			return nil, refuse("an uncompressed NAR whose FileHash/FileSize (%s, %d) are not its NarHash/NarSize (%s, %d)", out.FileHash, out.FileSize, out.NarHash, out.NarSize)
		}
	}
	if out.FileHash == "" || out.FileSize == 0 {
		return nil, refuse("no FileHash/FileSize: a compressed NAR is named by its FileHash before its bytes are read")
	}
	fileHash, err := narinfo.NormaliseHash(out.FileHash)
	if err != nil || !strings.HasPrefix(fileHash, "sha256:") {
		return nil, refuse("FileHash %q is not a sha256 hash", out.FileHash)
	}
	if limit := uint64(p.opts.MaxNARSize); out.FileSize > limit || out.NarSize > limit {
		return nil, refuse("FileSize %d, NarSize %d: over the %d-byte bound", out.FileSize, out.NarSize, limit)
	}
	out.FileHash = fileHash
	out.URL = spec.NarURL(strings.TrimPrefix(fileHash, "sha256:"), comp)
	if err := out.Validate(); err != nil {
		return nil, refuse("%v", err)
	}
	return &out, nil
}

// sigNames lists the key names of sigs, for messages.
func sigNames(sigs []string) string {
	if len(sigs) == 0 {
		return "none"
	}
	names := make([]string, 0, len(sigs))
	for _, s := range sigs {
		name, _, _ := strings.Cut(s, ":")
		names = append(names, name)
	}
	return strings.Join(names, ", ")
}

// upstreamNAR: the NAR is in an upstream cache, at the URL of its
// narinfo there; it is pulled into the blob cache (and stored in the
// first backend) when asked for.
type upstreamNAR struct {
	up   *Upstream
	info *narinfo.NarInfo // as served and stored (checked)
	url  string           // of the NAR in the upstream
	desc ocispec.Descriptor
}

func (l upstreamNAR) Blob() ocispec.Descriptor { return l.desc }

// fetchInfo is info with the URL of the NAR in the upstream, to read it
// there.
func (l upstreamNAR) fetchInfo() *narinfo.NarInfo {
	info := *l.info
	info.URL = l.url
	return &info
}
