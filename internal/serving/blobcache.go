package serving

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

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
// files, and is skipped if fills under way and pinned files hold the
// rest); a blob larger than a quarter of the limit is never fetched ahead
// (it streams from the backend); one fetched on demand (Join) may take
// the whole limit.
//
// A file being written is read while it fills: a reader gets the bytes
// written so far and waits for more, and the last byte only once the
// whole blob verified, so a client never receives a complete-looking
// body that is wrong. Fills need not come from a backend (Fill): a
// pull-through fill writes an upstream cache's NAR, verified as it
// arrives, and keeps it pinned (never evicted) while it is stored in a
// backend.
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
	pins     map[digest.Digest]int // complete blobs not to evict (see Pinned)

	fills *prometheus.CounterVec
	hits  *prometheus.CounterVec
	bytes prometheus.GaugeFunc
}

type cachedBlob struct {
	d    digest.Digest
	size int64
	data []byte // the blob, if kept in memory; else it is a file
}

// ErrAbandoned: a request for the blob came before its queued fill
// started (Open), and streamed it instead; the fill is dropped.
var ErrAbandoned = errors.New("asked for before its turn; streamed instead")

// ErrNoRoom: the blob cannot be cached: it is too large for the cache, or
// fills under way and pinned blobs already hold the disk the cache may
// use. The caller streams it instead.
var ErrNoRoom = errors.New("no room in the blob cache; streamed when asked")

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
		pins: map[digest.Digest]int{},
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
	c.PrefetchFill(Fill{Desc: loc.Desc, Copy: func(ctx context.Context, w io.Writer) error {
		rc, err := c.b.OpenBlob(ctx, loc)
		if err != nil {
			return err
		}
		vr, err := backend.VerifyReader(rc, loc.Desc)
		if err != nil {
			return err
		}
		defer vr.Close()
		_, err = io.Copy(w, vr)
		return err
	}})
}

// PrefetchFill starts fetching f's blob into the cache unless it is
// there, being fetched, or larger than a quarter of the cache; it waits
// for a fill slot (BlobCacheOptions.Jobs) in the background, and is
// dropped if a request for the blob comes first (Open) unless that
// request joins it (Join). f.Done, if set, is called in every case.
func (c *BlobCache) PrefetchFill(f Fill) {
	d := f.Desc.Digest
	if f.Desc.Size > c.max/4 || d.Validate() != nil {
		c.skipped(f, ErrNoRoom)
		return
	}
	c.mu.Lock()
	_, cached := c.entries[d]
	_, filling := c.inflight[d]
	if cached || filling {
		c.mu.Unlock()
		return // that fill's Done reports
	}
	bf := newBlobFill(f.Desc.Size)
	c.inflight[d] = bf
	c.mu.Unlock()
	go c.run(f, bf, true)
}

// skipped tells f.Done that f is not fetched, for want of room.
func (c *BlobCache) skipped(f Fill, err error) {
	if f.Done != nil {
		f.Done(nil, err)
	}
}

// reserve counts n bytes of a fill against the limit, evicting the least
// recently used unpinned files to make room; ErrNoRoom if the fills
// under way and pinned files leave none.
func (c *BlobCache) reserve(n int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.size+n > c.max && c.evictOne(c.lru) {
	}
	if c.size+n > c.max {
		return ErrNoRoom
	}
	c.size += n
	return nil
}

// evictOne drops the least recently used blob of l (c.lru or c.memLRU)
// that is not pinned, reporting whether there was one; c.mu is held.
func (c *BlobCache) evictOne(l *list.List) bool {
	for el := l.Back(); el != nil; el = el.Prev() {
		e := el.Value.(cachedBlob)
		if c.pins[e.d] > 0 {
			continue
		}
		l.Remove(el)
		delete(c.entries, e.d)
		if e.data != nil {
			c.mem -= e.size
			return true
		}
		c.size -= e.size
		os.Remove(c.path(e.d)) // a reader holding it open keeps its bytes
		return true
	}
	return false
}

// Open returns the cached blob with digest d (a file, or a reader of the
// bytes kept in memory, both seekable): a file being written is read as
// it fills (see BlobCache); a blob being fetched into memory is waited
// for (within ctx). It returns nil if the blob is not cached, or if its
// download waits for its turn (the caller then streams it, and the
// download is dropped unless a Join promotes it).
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
	if filling {
		rc, err := c.follow(ctx, d, f)
		if err != nil {
			c.hits.WithLabelValues("missed").Inc()
			return nil
		}
		return rc
	}
	return c.openEntry(d, "cached")
}

// openEntry opens the complete blob d, counting a hit as result (if not
// ""); nil if it is not cached.
func (c *BlobCache) openEntry(d digest.Digest, result string) io.ReadSeekCloser {
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
	count := func(r string) {
		if result != "" {
			c.hits.WithLabelValues(r).Inc()
		}
	}
	if !ok {
		count("missed")
		return nil
	}
	if data != nil {
		count(result)
		return memBlob{bytes.NewReader(data)}
	}
	file, err := os.Open(c.path(d))
	if err != nil {
		count("missed")
		return nil // evicted meanwhile
	}
	count(result)
	return file
}

// memBlob reads a blob the cache keeps in memory; its bytes are never
// changed, so readers share them.
type memBlob struct{ *bytes.Reader }

func (memBlob) Close() error { return nil }
