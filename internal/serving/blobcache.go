package serving

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixoci/nixoci/backend"
)

// BlobCache keeps blobs fetched ahead of a client on local disk, so the
// request that follows (Nix asks for a NAR right after its narinfo)
// finds the bytes ready instead of waiting a round trip to a remote
// registry. Blobs are verified against their digest while they are
// written and renamed into place only when complete; a cached file is
// served like a verified layout file (sendfile). The cache holds at most
// its size limit on disk, files being written included (a fill reserves
// its blob's size before it starts, evicting the least recently used
// files, and is skipped if fills under way hold the rest); a blob larger
// than a quarter of the limit is never cached (it streams from the
// backend).
//
// Small blobs (at most MemoryBlobMax bytes, most NARs of a system
// closure) are kept in memory instead, within their own limit: for them
// a file's creation, rename and opening cost more than their bytes.
//
// The directory is the process's own: its files are removed at start and
// at Close, so serve processes never share one.
type BlobCache struct {
	b    *Backends
	dir  string
	max  int64
	sem  chan struct{}
	size int64 // bytes of the files held, and of the fills writing files

	memMax int64 // 0: no memory tier
	mem    int64

	mu       sync.Mutex
	entries  map[digest.Digest]*list.Element // complete blobs, in lru or memLRU
	lru      *list.List                      // files, most recent first
	memLRU   *list.List                      // blobs in memory, most recent first
	inflight map[digest.Digest]*blobFill

	fills *prometheus.CounterVec
	hits  *prometheus.CounterVec
	bytes prometheus.GaugeFunc
}

type cachedBlob struct {
	d    digest.Digest
	size int64
	data []byte // the blob, if kept in memory; else it is a file
}

type blobFill struct {
	done      chan struct{}
	err       error
	started   atomic.Bool // it holds a fill slot (the download is under way)
	abandoned atomic.Bool // a request came first: it streams the blob, the fill skips it
}

// errAbandoned: a request for the blob came before its fill started.
var errAbandoned = errors.New("asked for before its turn; streamed instead")

// errNoRoom: the fills under way already hold the disk the cache may use.
var errNoRoom = errors.New("the cache's disk is taken by the fills under way; streamed when asked")

// BlobCacheOptions configure NewBlobCache.
type BlobCacheOptions struct {
	// Dir holds the cached files; default a new directory under
	// os.TempDir(). Its files are removed at start and at Close.
	Dir string
	// MaxBytes bounds the disk used; required (> 0).
	MaxBytes int64
	// Jobs bounds concurrent fills; default 32 (they wait on the network).
	Jobs int
	// MemoryBytes bounds the memory holding blobs of at most
	// MemoryBlobMax bytes, which are kept there instead of on disk;
	// default DefaultMemoryBytes, negative: every blob on disk.
	MemoryBytes int64
}

// MemoryBlobMax is the size up to which a cached blob is kept in memory.
const MemoryBlobMax = 256 << 10

// DefaultMemoryBytes is the default BlobCacheOptions.MemoryBytes.
const DefaultMemoryBytes = 64 << 20

// NewBlobCache makes a BlobCache over b's backends, counting into b's
// metrics.
func NewBlobCache(b *Backends, opts BlobCacheOptions) (*BlobCache, error) {
	if opts.MaxBytes <= 0 {
		return nil, errors.New("serving: blob cache without a size")
	}
	if opts.Jobs <= 0 {
		opts.Jobs = 32
	}
	if opts.MemoryBytes == 0 {
		opts.MemoryBytes = DefaultMemoryBytes
	}
	dir := opts.Dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "nixoci-serve-blobs-"); err != nil {
			return nil, err
		}
	} else if err := clearDir(dir); err != nil {
		return nil, fmt.Errorf("blob cache %s: %w", dir, err)
	}
	c := &BlobCache{
		b: b, dir: dir, max: opts.MaxBytes, sem: make(chan struct{}, opts.Jobs), memMax: max(opts.MemoryBytes, 0),
		entries: map[digest.Digest]*list.Element{}, lru: list.New(), memLRU: list.New(), inflight: map[digest.Digest]*blobFill{},
		fills: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixoci_blob_cache_fills_total", Help: "Blobs fetched ahead into the local blob cache, by outcome.",
		}, []string{"outcome"}),
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixoci_blob_cache_requests_total", Help: "Blob requests that found the blob cached, being fetched, or not cached.",
		}, []string{"result"}),
	}
	c.bytes = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "nixoci_blob_cache_bytes", Help: "Bytes held by the local blob cache on disk.",
	}, func() float64 { c.mu.Lock(); defer c.mu.Unlock(); return float64(c.size) })
	memBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "nixoci_blob_cache_memory_bytes", Help: "Bytes of small blobs the local blob cache holds in memory.",
	}, func() float64 { c.mu.Lock(); defer c.mu.Unlock(); return float64(c.mem) })
	if err := b.Metrics().Register(c.fills, c.hits, c.bytes, memBytes); err != nil {
		return nil, err
	}
	return c, nil
}

// clearDir makes dir exist and empty of what a blob cache leaves.
func clearDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.Type().IsRegular() && validCacheName(e.Name()) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return nil
}

// validCacheName: a blob file (64 hex digits) or a partial one.
func validCacheName(name string) bool {
	base, _, _ := strings.Cut(name, ".")
	return len(base) == 64 && digest.NewDigestFromEncoded(digest.SHA256, base).Validate() == nil
}

// Close removes the cached files.
func (c *BlobCache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for d, el := range c.entries {
		if el.Value.(cachedBlob).data == nil {
			os.Remove(c.path(d))
		}
	}
	c.entries, c.size, c.mem = map[digest.Digest]*list.Element{}, 0, 0
	c.lru.Init()
	c.memLRU.Init()
	return nil
}

func (c *BlobCache) path(d digest.Digest) string { return filepath.Join(c.dir, d.Encoded()) }

// Prefetch starts fetching the blob at loc into the cache unless it is
// there, being fetched, or too large; it does not wait.
func (c *BlobCache) Prefetch(loc BlobLocation) {
	d := loc.Desc.Digest
	if loc.Desc.Size > c.max/4 || d.Validate() != nil {
		return
	}
	c.mu.Lock()
	if _, ok := c.entries[d]; ok {
		c.mu.Unlock()
		return
	}
	if _, ok := c.inflight[d]; ok {
		c.mu.Unlock()
		return
	}
	f := &blobFill{done: make(chan struct{})}
	c.inflight[d] = f
	c.mu.Unlock()
	go func() {
		f.err = c.fill(loc, f)
		c.mu.Lock()
		delete(c.inflight, d)
		c.mu.Unlock()
		close(f.done)
		outcome := "ok"
		if errors.Is(f.err, errAbandoned) || errors.Is(f.err, errNoRoom) {
			outcome = "skipped"
		} else if f.err != nil {
			outcome = "failed"
			slog.Debug("blob prefetch failed; the blob streams from the backend when asked", "digest", d.String(), "err", f.err)
		}
		c.fills.WithLabelValues(outcome).Inc()
	}()
}

// fill downloads one blob, verified, into the cache.
func (c *BlobCache) fill(loc BlobLocation, f *blobFill) error {
	c.sem <- struct{}{}
	defer func() { <-c.sem }()
	if f.abandoned.Load() {
		return errAbandoned
	}
	inMemory := loc.Desc.Size <= MemoryBlobMax && loc.Desc.Size <= c.memMax
	if !inMemory {
		// The file counts against the limit from before its first byte:
		// room is made (evicting complete files) before the download
		// starts, and given back if it fails.
		if err := c.reserve(loc.Desc.Size); err != nil {
			return err
		}
	}
	committed := false
	defer func() {
		if !inMemory && !committed {
			c.mu.Lock()
			c.size -= loc.Desc.Size
			c.mu.Unlock()
		}
	}()
	f.started.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rc, err := c.b.OpenBlob(ctx, loc)
	if err != nil {
		return err
	}
	d := loc.Desc.Digest
	if inMemory {
		data, err := backend.ReadAll(rc, loc.Desc, MemoryBlobMax)
		if err != nil {
			return err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		c.entries[d] = c.memLRU.PushFront(cachedBlob{d, loc.Desc.Size, data})
		c.mem += loc.Desc.Size
		for c.mem > c.memMax && c.memLRU.Len() > 1 {
			c.evict(c.memLRU)
		}
		return nil
	}
	vr, err := backend.VerifyReader(rc, loc.Desc)
	if err != nil {
		return err
	}
	defer vr.Close()
	tmp, err := os.CreateTemp(c.dir, d.Encoded()+".part-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	_, err = io.Copy(tmp, vr)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := os.Rename(tmp.Name(), c.path(d)); err != nil {
		return err
	}
	file, err := os.Open(c.path(d))
	if err != nil {
		return err
	}
	if _, id, ok := fileIdentity(file); ok {
		c.b.verified.Put(d.String(), id, verifiedTTL)
	}
	file.Close()
	c.entries[d] = c.lru.PushFront(cachedBlob{d, loc.Desc.Size, nil})
	committed = true // its reserved bytes are the file's now
	return nil
}

// reserve counts n bytes of a fill against the limit, evicting the least
// recently used files to make room; errNoRoom if the fills under way
// alone leave none.
func (c *BlobCache) reserve(n int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.size+n > c.max && c.lru.Len() > 0 {
		c.evict(c.lru)
	}
	if c.size+n > c.max {
		return errNoRoom
	}
	c.size += n
	return nil
}

// evict drops the least recently used blob of l (c.lru or c.memLRU);
// c.mu is held.
func (c *BlobCache) evict(l *list.List) {
	old := l.Back()
	e := old.Value.(cachedBlob)
	l.Remove(old)
	delete(c.entries, e.d)
	if e.data != nil {
		c.mem -= e.size
		return
	}
	c.size -= e.size
	os.Remove(c.path(e.d)) // a reader holding it open keeps its bytes
}

// Open returns the cached blob with digest d (a file, or a reader of the
// bytes kept in memory, both seekable), waiting (within ctx) for a
// download in progress; nil if the blob is not cached, or its download
// waits for its turn (the caller then streams it, and the download is
// dropped).
func (c *BlobCache) Open(ctx context.Context, d digest.Digest) io.ReadSeekCloser {
	c.mu.Lock()
	f, filling := c.inflight[d]
	c.mu.Unlock()
	if filling && !f.started.Load() {
		f.abandoned.Store(true)
		if !f.started.Load() {
			c.hits.WithLabelValues("missed").Inc()
			return nil
		}
	}
	result := "cached"
	if filling {
		result = "waited"
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil
		}
	}
	c.mu.Lock()
	el, ok := c.entries[d]
	var data []byte
	if ok {
		data = el.Value.(cachedBlob).data
		if data != nil {
			c.memLRU.MoveToFront(el)
		} else {
			c.lru.MoveToFront(el)
		}
	}
	c.mu.Unlock()
	if !ok {
		c.hits.WithLabelValues("missed").Inc()
		return nil
	}
	if data != nil {
		c.hits.WithLabelValues(result).Inc()
		return memBlob{bytes.NewReader(data)}
	}
	file, err := os.Open(c.path(d))
	if err != nil {
		c.hits.WithLabelValues("missed").Inc()
		return nil // evicted meanwhile
	}
	c.hits.WithLabelValues(result).Inc()
	return file
}

// memBlob reads a blob the cache keeps in memory; its bytes are never
// changed, so readers share them.
type memBlob struct{ *bytes.Reader }

func (memBlob) Close() error { return nil }
