package source

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/nix-community/go-nix/pkg/storepath"
	"golang.org/x/sync/errgroup"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/nar"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// BinaryCache is an existing Nix binary cache (a file:// directory as
// `nix copy --to file://` writes, or an http(s) cache) as an
// artifact.Source. Its
// NARs are stored as they are, never recompressed; each is checked
// against its narinfo's FileHash, FileSize, NarHash and NarSize, and
// parsed strictly as a NAR, while it is copied.
type BinaryCache struct {
	base   *url.URL
	client *http.Client
	// Jobs bounds concurrent narinfo fetches while walking a closure;
	// default backend.DefaultJobs().
	Jobs int
}

// OpenBinaryCache opens the cache at rawURL (file:///DIR, http://…,
// https://…). client may be nil for backend.DefaultHTTPClient(), the
// client and timeouts registries get; either way, HTTP requests are
// retried and cut-off downloads resumed as backend.Retry describes.
//
// The URL may carry credentials (http://user:password@host/); they are
// sent as HTTP Basic authentication and never shown: messages and logs
// name the cache by its URL without user info or query (see
// backend.RedactURL).
func OpenBinaryCache(rawURL string, client *http.Client) (*BinaryCache, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its message quotes the whole URL
		}
		return nil, fmt.Errorf("binary cache %s: %w", backend.RedactURLString(rawURL), err)
	}
	named := backend.RedactURL(u)
	switch u.Scheme {
	case "file":
		if u.Path == "" {
			return nil, fmt.Errorf("binary cache %s: file URL without a directory", named)
		}
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("binary cache %s: file URLs name a local directory: write file:///%s%s", named, u.Host, u.Path)
		}
	case "http", "https":
	default:
		return nil, fmt.Errorf("binary cache %s: want a file://, http:// or https:// URL", named)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	u.RawQuery, u.Fragment = "", ""
	if client == nil {
		client = backend.DefaultHTTPClient()
	}
	return &BinaryCache{base: u, client: client}, nil
}

// String names the cache in messages, without the credentials of its
// URL.
func (c *BinaryCache) String() string { return "binary cache " + c.URL() }

// URL is the cache's URL without credentials, query or trailing slash.
func (c *BinaryCache) URL() string {
	return strings.TrimSuffix(backend.RedactURL(c.base), "/")
}

// ResolveRoot accepts a store path, or a symlink to one (it need not
// exist locally).
func (c *BinaryCache) ResolveRoot(arg string) (string, error) {
	p := arg
	if !strings.HasPrefix(p, "/") || !isStorePath(p) {
		if target, err := os.Readlink(arg); err == nil {
			p = target
		}
	}
	if !isStorePath(p) {
		return "", fmt.Errorf("%s: not a store path (want /nix/store/<hash>-<name>): %w", arg, ErrNotInStore)
	}
	return path.Clean(p), nil
}

func isStorePath(p string) bool {
	_, err := storepath.FromAbsolutePath(path.Clean(p))
	return err == nil
}

// Closure walks the references of roots through the cache's narinfos.
func (c *BinaryCache) Closure(ctx context.Context, roots []string) ([]*narinfo.NarInfo, error) {
	storeDir := path.Dir(roots[0])
	jobs := c.Jobs
	if jobs <= 0 {
		jobs = backend.DefaultJobs()
	}
	var mu sync.Mutex
	seen := map[string]*narinfo.NarInfo{}
	level := roots
	for _, r := range roots {
		seen[r] = nil
	}
	var order []string
	for len(level) > 0 {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(jobs)
		var next []string
		for _, p := range level {
			g.Go(func() error {
				info, err := c.NarInfo(gctx, p)
				if err != nil {
					return err
				}
				mu.Lock()
				defer mu.Unlock()
				seen[p] = info
				for _, r := range info.References {
					full := storeDir + "/" + r
					if _, ok := seen[full]; !ok {
						seen[full] = nil
						next = append(next, full)
					}
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		order = append(order, level...)
		level = next
	}
	infos := make([]*narinfo.NarInfo, len(order))
	for i, p := range order {
		infos[i] = seen[p]
	}
	warnMixedSystems(infos)
	return infos, nil
}

// NarInfo fetches and parses the narinfo of storePath.
func (c *BinaryCache) NarInfo(ctx context.Context, storePath string) (*narinfo.NarInfo, error) {
	name := spec.PathTag(storePath) + ".narinfo"
	info, err := c.narInfoOf(ctx, spec.PathTag(storePath), storePath)
	if err != nil {
		return nil, err
	}
	if info.StorePath != storePath {
		return nil, fmt.Errorf("%s: %s describes %s, not %s", c, name, info.StorePath, storePath)
	}
	if info.FileHash == "" || info.FileSize == 0 {
		return nil, fmt.Errorf("%s: %s: no FileHash/FileSize; nixoci needs both to store the NAR unchanged", c, name)
	}
	return info, nil
}

// NarInfoOf fetches and parses the narinfo named by a store path's hash
// part ("<hash>.narinfo"), and checks that it describes a path with that
// hash part. A cache without it is ErrNotInCache; nothing else is
// checked (callers check the store directory, signatures and the NAR's
// fields as they need).
func (c *BinaryCache) NarInfoOf(ctx context.Context, hash string) (*narinfo.NarInfo, error) {
	return c.narInfoOf(ctx, hash, "")
}

// narInfoOf is NarInfoOf; a failure to fetch names storePath if known.
func (c *BinaryCache) narInfoOf(ctx context.Context, hash, storePath string) (*narinfo.NarInfo, error) {
	if !spec.IsHashPart(hash) {
		return nil, fmt.Errorf("%s: %q is not the hash part of a store path", c, hash)
	}
	name := hash + ".narinfo"
	rc, err := c.open(ctx, name, -1)
	if err != nil && storePath != "" {
		return nil, fmt.Errorf("%s: %s: %w", c, storePath, err)
	} else if err != nil {
		return nil, fmt.Errorf("%s: %w", c, err)
	}
	defer rc.Close()
	info, err := narinfo.Parse(ctxReader{ctx, rc})
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", c, name, err)
	}
	if info.HashPart() != hash {
		return nil, fmt.Errorf("%s: %s describes %s", c, name, info.StorePath)
	}
	return info, nil
}

// Ping asks the cache for its nix-cache-info once, without retrying: a
// health check.
func (c *BinaryCache) Ping(ctx context.Context) error {
	var err error
	if c.base.Scheme == "file" {
		_, err = os.Stat(filepath.Join(filepath.FromSlash(c.base.Path), "nix-cache-info"))
	} else {
		var rc io.ReadCloser
		if rc, err = c.get(ctx, c.base.ResolveReference(&url.URL{Path: "nix-cache-info"}).String(), 0); err == nil {
			_, err = io.Copy(io.Discard, io.LimitReader(rc, 64<<10))
			rc.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("%s: nix-cache-info: %w", c, err)
	}
	return nil
}

// CheckNarURL checks a narinfo's URL as nixoci follows it: relative to
// the cache and inside it (no scheme, host or user info, no absolute
// path, no ".." segment, no backslash or control character). Nix also
// follows absolute URLs; nixoci does not, so that a narinfo cannot send
// a request (and the cache's credentials) elsewhere.
func CheckNarURL(rel string) error {
	if rel == "" {
		return errors.New("empty URL")
	}
	for i := 0; i < len(rel); i++ {
		if c := rel[i]; c < ' ' || c == 0x7f || c == '\\' {
			return fmt.Errorf("URL %q: character %q not allowed", rel, c)
		}
	}
	ref, err := url.Parse(rel)
	if err != nil {
		return fmt.Errorf("URL %q: %w", rel, err)
	}
	clean := path.Clean(ref.Path)
	if ref.IsAbs() || ref.Host != "" || ref.User != nil || ref.Opaque != "" || strings.HasPrefix(rel, "//") ||
		path.IsAbs(ref.Path) || clean == ".." || strings.HasPrefix(clean, "../") || clean == "." {
		return fmt.Errorf("URL %q leaves the cache directory", rel)
	}
	return nil
}

// open opens a file of the cache, of size bytes (negative if unknown), by
// its URL relative to the cache root.
func (c *BinaryCache) open(ctx context.Context, rel string, size int64) (io.ReadCloser, error) {
	if err := CheckNarURL(rel); err != nil {
		return nil, err
	}
	ref, err := url.Parse(rel)
	if err != nil {
		return nil, fmt.Errorf("URL %q: %w", rel, err)
	}
	if c.base.Scheme == "file" {
		clean := path.Clean(ref.Path)
		f, err := os.Open(filepath.Join(filepath.FromSlash(c.base.Path), filepath.FromSlash(clean)))
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", rel, ErrNotInCache)
		}
		return f, err
	}
	u := c.base.ResolveReference(ref)
	return backend.OpenResuming(ctx, c.String()+": "+rel, size, func(ctx context.Context, offset int64) (io.ReadCloser, error) {
		rc, err := c.get(ctx, u.String(), offset)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", rel, err)
		}
		return rc, nil
	})
}

// get fetches url from offset on: with a Range request, or skipping the
// first bytes of a server that answers it whole.
func (c *BinaryCache) get(ctx context.Context, url string, offset int64) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, backend.RedactError(err)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		return backend.SkipTo(resp.Body, offset)
	case resp.StatusCode == http.StatusPartialContent && offset > 0 &&
		strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", offset)):
		return resp.Body, nil
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone || resp.StatusCode == http.StatusForbidden:
		resp.Body.Close()
		return nil, fmt.Errorf("HTTP %s: %w", resp.Status, ErrNotInCache)
	default:
		resp.Body.Close()
		return nil, &backend.StatusError{StatusCode: resp.StatusCode, Status: resp.Status}
	}
}

// OpenNAR opens the compressed NAR info names (its URL, checked with
// CheckNarURL), as the cache sends it: unchecked, resumed where a
// transfer is cut off; the caller verifies it against FileHash.
func (c *BinaryCache) OpenNAR(ctx context.Context, info *narinfo.NarInfo) (io.ReadCloser, error) {
	rc, err := c.open(ctx, info.URL, int64(info.FileSize))
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", c, info.StorePath, err)
	}
	return rc, nil
}

// OpenFile opens the file of the cache at rel (checked with
// CheckNarURL), of a size not known beforehand; a cache without it is
// ErrNotInCache.
func (c *BinaryCache) OpenFile(ctx context.Context, rel string) (io.ReadCloser, error) {
	rc, err := c.open(ctx, rel, -1)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c, err)
	}
	return rc, nil
}

// WriteNAR copies the compressed NAR unchanged to w, checking its
// FileHash and size, decompressing it to parse it strictly and to check
// NarHash and NarSize on the way.
func (c *BinaryCache) WriteNAR(ctx context.Context, info *narinfo.NarInfo, w io.Writer) (spec.Compression, error) {
	comp := spec.Compression(info.Compression)
	switch comp {
	case spec.CompressionXz, spec.CompressionZstd, spec.CompressionNone:
	default:
		return "", fmt.Errorf("%s: %s: compression %q is not one nixoci stores (xz, zstd, none)", c, info.StorePath, info.Compression)
	}
	rc, err := c.OpenNAR(ctx, info)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	// Bounded by what the narinfo claims: a file longer than FileSize
	// is cut one byte past it (and then fails its hash), a NAR that
	// decompresses past NarSize stops there.
	var body io.Reader = ctxReader{ctx, rc}
	if info.FileSize > 0 {
		body = io.LimitReader(body, int64(info.FileSize)+1)
	}
	fileHash := sha256.New()
	raw := io.TeeReader(body, io.MultiWriter(w, fileHash))
	h := sha256.New()
	n, narErr := nar.ValidateCompressedSize(raw, comp, int64(info.NarSize), &boundedWriter{w: h, left: int64(info.NarSize)})
	// The decompressor may stop before the end of the file (padding);
	// read the rest so FileHash covers every byte.
	if _, err := io.Copy(io.Discard, raw); err != nil {
		return "", fmt.Errorf("%s: %s: %w", c, info.URL, err)
	}
	// A file that is not what its narinfo says is reported as such first:
	// it explains any NAR error that follows from it.
	got, err := narinfo.HashFromDigest(fileHash.Sum(nil))
	if err != nil {
		return "", err
	}
	if got != info.FileHash {
		return "", fmt.Errorf("%s: %s (%s): file is %s but its narinfo says FileHash %s (corrupt file): %w", c, info.URL, info.StorePath, got, info.FileHash, ErrHashMismatch)
	}
	if narErr != nil {
		return "", fmt.Errorf("%s: %s (%s): %w", c, info.URL, info.StorePath, narErr)
	}
	if err := checkNAR(info, h, n); err != nil {
		return "", fmt.Errorf("%s: %w", c, err)
	}
	return comp, nil
}
