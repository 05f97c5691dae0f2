package serving

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/backend"
)

// Fills: how a blob gets into the cache (from a backend, or any source a
// Fill names), read by its readers as it is written, and given pinned to
// whoever asked to be told (Fill.Done).

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
