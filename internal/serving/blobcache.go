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
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
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

// blobFill is a fill in flight.
type blobFill struct {
	size      int64
	done      chan struct{} // closed when it ended; err says how
	err       error
	started   atomic.Bool // it holds a fill slot or was promoted (the download is under way)
	abandoned atomic.Bool // a request came first: it streams the blob, the fill skips it
	promote   chan struct{}
	promoted  sync.Once // closes promote: a request waits on this fill, which starts without a slot

	mu      sync.Mutex
	path    string        // the file being written, once created ("" in memory)
	written int64         // bytes written to it
	more    chan struct{} // closed and replaced when written grows
}

func newBlobFill(size int64) *blobFill {
	return &blobFill{size: size, done: make(chan struct{}), promote: make(chan struct{}), more: make(chan struct{})}
}

// progress is what a reader may know of the fill: bytes written, a
// channel closed when that changes, and whether it ended (and how).
func (f *blobFill) progress() (written int64, more <-chan struct{}, done bool, err error) {
	f.mu.Lock()
	written, more = f.written, f.more
	f.mu.Unlock()
	select {
	case <-f.done:
		return written, more, true, f.err
	default:
		return written, more, false, nil
	}
}

// wrote records n more bytes written and wakes the readers.
func (f *blobFill) wrote(n int) {
	f.mu.Lock()
	f.written += int64(n)
	close(f.more)
	f.more = make(chan struct{})
	f.mu.Unlock()
}

// ErrAbandoned: a request for the blob came before its queued fill
// started (Open), and streamed it instead; the fill is dropped.
var ErrAbandoned = errors.New("asked for before its turn; streamed instead")

// ErrNoRoom: the blob cannot be cached: it is too large for the cache, or
// fills under way and pinned blobs already hold the disk the cache may
// use. The caller streams it instead.
var ErrNoRoom = errors.New("no room in the blob cache; streamed when asked")

// Fill is a blob to fetch into the cache from wherever Copy reads it: a
// backend (Prefetch makes one), or another source, such as an upstream
// binary cache.
type Fill struct {
	// Desc is the blob: its digest names it in the cache; its size is
	// reserved before the fill starts and bounds what Copy may write.
	Desc ocispec.Descriptor
	// Copy writes the blob to w and returns nil only if what it wrote
	// is the whole blob, verified against Desc (and whatever else the
	// caller checks). A write past Desc.Size fails.
	Copy func(ctx context.Context, w io.Writer) error
	// Timeout bounds the fill; default 10 minutes. The fill does not end
	// with the request that started it: it is shared, and finishes in
	// the background within this bound.
	Timeout time.Duration
	// Done, if set, is called once when the fill ends, in the fill's
	// goroutine: with the blob complete in the cache and pinned there
	// until the callee calls Release (err nil), or with why it is not
	// cached (ErrNoRoom if it was skipped). It is not called when the
	// blob is cached or being fetched already: the fill that fetched it
	// reports.
	Done func(*Pinned, error)
}

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

// run runs the fill bf of f, queued for a fill slot if queued, and
// records how it ended.
func (c *BlobCache) run(f Fill, bf *blobFill, queued bool) {
	d := f.Desc.Digest
	p, err := c.fill(f, bf, queued)
	bf.err = err
	c.mu.Lock()
	delete(c.inflight, d)
	c.mu.Unlock()
	close(bf.done)
	bf.wrote(0) // wake the readers
	outcome := "ok"
	if errors.Is(err, ErrAbandoned) || errors.Is(err, ErrNoRoom) {
		outcome = "skipped"
	} else if err != nil {
		outcome = "failed"
		slog.Debug("blob fill failed; the blob streams from its source when asked", "digest", d.String(), "err", err)
	}
	c.fills.WithLabelValues(outcome).Inc()
	if f.Done != nil {
		f.Done(p, err)
	}
}

// fill downloads one blob, verified, into the cache, and returns it
// pinned if f.Done wants it.
func (c *BlobCache) fill(f Fill, bf *blobFill, queued bool) (*Pinned, error) {
	if queued {
		select {
		case c.sem <- struct{}{}:
			defer func() { <-c.sem }()
		case <-bf.promote:
		}
		if bf.abandoned.Load() && !isClosed(bf.promote) {
			return nil, ErrAbandoned
		}
	}
	desc := f.Desc
	inMemory := desc.Size <= MemoryBlobMax && desc.Size <= c.memMax
	if !inMemory {
		// The file counts against the limit from before its first byte:
		// room is made (evicting complete files) before the download
		// starts, and given back if it fails.
		if err := c.reserve(desc.Size); err != nil {
			return nil, err
		}
	}
	committed := false
	defer func() {
		if !inMemory && !committed {
			c.mu.Lock()
			c.size -= desc.Size
			c.mu.Unlock()
		}
	}()
	bf.started.Store(true)
	timeout := f.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d := desc.Digest
	if inMemory {
		buf := &boundedBuffer{max: desc.Size}
		if err := f.Copy(ctx, buf); err != nil {
			return nil, err
		}
		if int64(buf.Len()) != desc.Size {
			return nil, fmt.Errorf("%s: %d bytes, want %d: %w", d, buf.Len(), desc.Size, backend.ErrHashMismatch)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		c.entries[d] = c.memLRU.PushFront(cachedBlob{d, desc.Size, buf.Bytes()})
		c.mem += desc.Size
		p := c.pinLocked(f, d)
		for c.mem > c.memMax && c.memLRU.Len() > 1 && c.evictOne(c.memLRU) {
		}
		return p, nil
	}
	tmp, err := os.CreateTemp(c.dir, d.Encoded()+".part-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	bf.mu.Lock()
	bf.path = tmp.Name()
	bf.mu.Unlock()
	bf.wrote(0)
	err = f.Copy(ctx, &fillWriter{f: tmp, bf: bf, size: desc.Size})
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil && bf.written != desc.Size {
		err = fmt.Errorf("%s: %d bytes, want %d: %w", d, bf.written, desc.Size, backend.ErrHashMismatch)
	}
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := os.Rename(tmp.Name(), c.path(d)); err != nil {
		return nil, err
	}
	file, err := os.Open(c.path(d))
	if err != nil {
		return nil, err
	}
	if _, id, ok := fileIdentity(file); ok {
		c.b.verified.Put(d.String(), id, verifiedTTL)
	}
	file.Close()
	c.entries[d] = c.lru.PushFront(cachedBlob{d, desc.Size, nil})
	committed = true // its reserved bytes are the file's now
	return c.pinLocked(f, d), nil
}

// isClosed reports whether ch is closed.
func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// pinLocked pins d for f.Done, if set; c.mu is held.
func (c *BlobCache) pinLocked(f Fill, d digest.Digest) *Pinned {
	if f.Done == nil {
		return nil
	}
	c.pins[d]++
	return &Pinned{c: c, d: d}
}

// fillWriter writes a fill's file, at most size bytes, telling its
// readers as it goes.
type fillWriter struct {
	f    *os.File
	bf   *blobFill
	size int64
	n    int64
}

func (w *fillWriter) Write(p []byte) (int, error) {
	if w.n+int64(len(p)) > w.size {
		return 0, fmt.Errorf("more than the %d bytes recorded: %w", w.size, backend.ErrHashMismatch)
	}
	n, err := w.f.Write(p)
	w.n += int64(n)
	w.bf.wrote(n)
	return n, err
}

// boundedBuffer is a bytes.Buffer refusing to grow past max bytes.
type boundedBuffer struct {
	bytes.Buffer
	max int64
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if int64(b.Len()+len(p)) > b.max {
		return 0, fmt.Errorf("more than the %d bytes recorded: %w", b.max, backend.ErrHashMismatch)
	}
	return b.Buffer.Write(p)
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

// Pinned is a complete blob the cache keeps (never evicts) until
// Release, e.g. while it is being stored elsewhere.
type Pinned struct {
	c    *BlobCache
	d    digest.Digest
	once sync.Once
}

// Pin pins the blob with digest d if it is cached; nil if not.
func (c *BlobCache) Pin(d digest.Digest) *Pinned {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[d]; !ok {
		return nil
	}
	c.pins[d]++
	return &Pinned{c: c, d: d}
}

// Digest is the pinned blob's digest.
func (p *Pinned) Digest() digest.Digest { return p.d }

// Open reads the pinned blob from its start.
func (p *Pinned) Open() (io.ReadSeekCloser, error) {
	if rc := p.c.openEntry(p.d, ""); rc != nil {
		return rc, nil
	}
	return nil, fmt.Errorf("blob cache: %s is gone (the cache was closed)", p.d)
}

// Release unpins the blob; it may then be evicted. Calls after the first
// do nothing.
func (p *Pinned) Release() {
	p.once.Do(func() {
		p.c.mu.Lock()
		defer p.c.mu.Unlock()
		if p.c.pins[p.d]--; p.c.pins[p.d] <= 0 {
			delete(p.c.pins, p.d)
		}
	})
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

// Join returns the blob of f from the cache, fetching it now if it is
// neither cached nor being fetched, or starting its queued prefetch at
// once: the caller reads it as it fills (see BlobCache), and the fill
// goes on without the caller if it goes away. A blob larger than the
// cache, or for which the fills under way and pinned blobs leave no
// room, is ErrNoRoom: the caller streams it from its source. A failed
// fill is its error (a reader already given gets it as a read error).
func (c *BlobCache) Join(ctx context.Context, f Fill) (io.ReadSeekCloser, error) {
	d := f.Desc.Digest
	if f.Desc.Size > c.max || d.Validate() != nil {
		c.skipped(f, ErrNoRoom)
		return nil, ErrNoRoom
	}
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		if _, ok := c.entries[d]; ok {
			c.mu.Unlock()
			if rc := c.openEntry(d, "cached"); rc != nil {
				return rc, nil
			}
			continue // evicted meanwhile: fetch it again
		}
		bf, ok := c.inflight[d]
		if !ok {
			bf = newBlobFill(f.Desc.Size)
			c.inflight[d] = bf
			go c.run(f, bf, false)
		}
		c.mu.Unlock()
		bf.promoted.Do(func() { close(bf.promote) })
		rc, err := c.follow(ctx, d, bf)
		if errors.Is(err, ErrAbandoned) && attempt == 0 {
			continue // dropped just before it was promoted
		}
		if err != nil {
			c.hits.WithLabelValues("missed").Inc()
		}
		return rc, err
	}
}

// follow returns a reader of the fill bf of d: of its file as it is
// written, or, for a blob fetched into memory, of the blob once it is
// there (waiting within ctx).
func (c *BlobCache) follow(ctx context.Context, d digest.Digest, bf *blobFill) (io.ReadSeekCloser, error) {
	for {
		bf.mu.Lock()
		path, more := bf.path, bf.more
		bf.mu.Unlock()
		if path != "" {
			if file, err := os.Open(path); err == nil {
				c.hits.WithLabelValues("waited").Inc()
				return &fillReader{ctx: ctx, bf: bf, file: file, size: bf.size}, nil
			}
			// Renamed into place (or removed) meanwhile: the fill ends.
		}
		select {
		case <-bf.done:
			if bf.err != nil {
				return nil, bf.err
			}
			if rc := c.openEntry(d, "waited"); rc != nil {
				return rc, nil
			}
			return nil, fmt.Errorf("blob cache: %s was evicted as it was cached", d)
		case <-more:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
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

// fillReader reads a file as its fill writes it: the bytes written so
// far, waiting (within ctx) for more; the last byte only once the fill
// verified the whole blob; the fill's error if it failed.
type fillReader struct {
	ctx  context.Context
	bf   *blobFill
	file *os.File
	pos  int64
	size int64
}

func (r *fillReader) Read(p []byte) (int, error) {
	for {
		if r.pos >= r.size {
			return 0, io.EOF
		}
		avail, more, done, err := r.bf.progress()
		if err != nil {
			return 0, err
		}
		if !done {
			avail = min(avail, r.size-1) // withheld until verified
		}
		if r.pos < avail {
			n, err := r.file.ReadAt(p[:min(int64(len(p)), avail-r.pos)], r.pos)
			r.pos += int64(n)
			if err == io.EOF && n > 0 {
				err = nil
			}
			return n, err
		}
		if done {
			return 0, io.ErrUnexpectedEOF // cannot happen: a complete fill wrote size bytes
		}
		select {
		case <-more:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

func (r *fillReader) Seek(offset int64, whence int) (int64, error) {
	abs := offset
	switch whence {
	case io.SeekCurrent:
		abs += r.pos
	case io.SeekEnd:
		abs += r.size
	}
	if abs < 0 {
		return 0, errors.New("negative position")
	}
	r.pos = abs
	return abs, nil
}

func (r *fillReader) Close() error { return r.file.Close() }

// memBlob reads a blob the cache keeps in memory; its bytes are never
// changed, so readers share them.
type memBlob struct{ *bytes.Reader }

func (memBlob) Close() error { return nil }
