package serving

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// gatedSource is a Fill source that writes the first half of data, waits
// for release, then writes the rest (or fails with err instead), counting
// how often it was asked.
type gatedSource struct {
	data      []byte
	release   chan struct{}
	fail      error
	calls     atomic.Int32
	wroteHalf chan struct{}
}

func newGatedSource(data []byte) *gatedSource {
	return &gatedSource{data: data, release: make(chan struct{}), wroteHalf: make(chan struct{})}
}

func (g *gatedSource) fill(done func(*Pinned, error)) Fill {
	return Fill{
		Desc: ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(g.data), Size: int64(len(g.data))},
		Copy: func(ctx context.Context, w io.Writer) error {
			g.calls.Add(1)
			half := len(g.data) / 2
			if _, err := w.Write(g.data[:half]); err != nil {
				return err
			}
			close(g.wroteHalf)
			select {
			case <-g.release:
			case <-ctx.Done():
				return ctx.Err()
			}
			if g.fail != nil {
				return g.fail
			}
			_, err := w.Write(g.data[half:])
			return err
		},
		Done: done,
	}
}

// doneRecorder records the Done calls of fills.
type doneRecorder struct {
	mu     sync.Mutex
	pinned []*Pinned
	errs   []error
	called chan struct{}
}

func newDoneRecorder() *doneRecorder { return &doneRecorder{called: make(chan struct{}, 16)} }

func (d *doneRecorder) done(p *Pinned, err error) {
	d.mu.Lock()
	d.pinned = append(d.pinned, p)
	d.errs = append(d.errs, err)
	d.mu.Unlock()
	d.called <- struct{}{}
}

func (d *doneRecorder) wait(t *testing.T) (*Pinned, error) {
	t.Helper()
	select {
	case <-d.called:
	case <-time.After(10 * time.Second):
		t.Fatal("Done was not called")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pinned[len(d.pinned)-1], d.errs[len(d.errs)-1]
}

// TestBlobCacheJoinReadsAsItFills: a reader of a fill gets the bytes
// written so far before the fill ends, but not the last byte until the
// whole blob verified; then everything, and the blob stays pinned for
// Done until released.
func TestBlobCacheJoinReadsAsItFills(t *testing.T) {
	f := newBlobCacheFixture(t, BlobCacheOptions{MaxBytes: 16 << 20, MemoryBytes: -1})
	data := bytes.Repeat([]byte("abcdefgh"), 64<<10) // 512 KiB
	src := newGatedSource(data)
	rec := newDoneRecorder()
	rc, err := f.c.Join(t.Context(), src.fill(rec.done))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	<-src.wroteHalf
	got := make([]byte, len(data)/2)
	if _, err := io.ReadFull(rc, got); err != nil || !bytes.Equal(got, data[:len(data)/2]) {
		t.Fatalf("first half while filling: %v", err)
	}
	// Nothing more is there: the next read waits until the fill goes on.
	next := make(chan int, 1)
	go func() {
		n, _ := rc.Read(make([]byte, 1))
		next <- n
	}()
	select {
	case n := <-next:
		t.Fatalf("read %d bytes past what was written", n)
	case <-time.After(50 * time.Millisecond):
	}
	close(src.release)
	if n := <-next; n != 1 {
		t.Fatalf("read %d bytes after the fill went on", n)
	}
	rest, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(rest, data[len(data)/2+1:]) {
		t.Fatalf("rest: %d bytes, %v", len(rest), err)
	}
	p, err := rec.wait(t)
	if err != nil || p == nil {
		t.Fatalf("Done(%v, %v), want the blob pinned", p, err)
	}
	pr, err := p.Open()
	if err != nil {
		t.Fatal(err)
	}
	whole, _ := io.ReadAll(pr)
	pr.Close()
	if !bytes.Equal(whole, data) {
		t.Errorf("pinned blob: %d bytes", len(whole))
	}
	// Pinned, it is never evicted: a fill needing its room is refused.
	other := bytes.Repeat([]byte("x"), 16<<20-len(data)+1)
	if _, err := f.c.Join(t.Context(), newGatedSource(other).fill(nil)); !errors.Is(err, ErrNoRoom) {
		t.Errorf("a fill needing a pinned blob's room: %v, want ErrNoRoom", err)
	}
	p.Release()
	p.Release() // once only
	if f.c.pins[p.Digest()] != 0 {
		t.Errorf("pins after Release: %d", f.c.pins[p.Digest()])
	}
	if src.calls.Load() != 1 {
		t.Errorf("source asked %d times", src.calls.Load())
	}
}

// TestBlobCacheJoinFailedFill: a fill that fails half-way gives its
// readers the bytes written and then the error, never the last byte;
// nothing is cached and Done hears why.
func TestBlobCacheJoinFailedFill(t *testing.T) {
	f := newBlobCacheFixture(t, BlobCacheOptions{MaxBytes: 16 << 20, MemoryBytes: -1})
	data := bytes.Repeat([]byte("z"), 1<<20)
	src := newGatedSource(data)
	src.fail = errors.New("upstream reset")
	rec := newDoneRecorder()
	rc, err := f.c.Join(t.Context(), src.fill(rec.done))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	close(src.release)
	got, err := io.ReadAll(rc)
	if err == nil || err.Error() != "upstream reset" {
		t.Errorf("read error %v, want the fill's", err)
	}
	if len(got) >= len(data) {
		t.Errorf("read %d bytes of a failed %d-byte fill", len(got), len(data))
	}
	if p, err := rec.wait(t); p != nil || err == nil {
		t.Errorf("Done(%v, %v), want the error", p, err)
	}
	if rc := f.c.Open(t.Context(), digest.FromBytes(data)); rc != nil {
		rc.Close()
		t.Error("a failed fill is cached")
	}
	if f.c.size != 0 {
		t.Errorf("%d bytes still counted", f.c.size)
	}
}

// TestBlobCacheJoinShared: concurrent readers share one fill; one whose
// request goes away does not stop it.
func TestBlobCacheJoinShared(t *testing.T) {
	f := newBlobCacheFixture(t, BlobCacheOptions{MaxBytes: 16 << 20, MemoryBytes: -1})
	data := bytes.Repeat([]byte("s"), 1<<20)
	src := newGatedSource(data)
	rec := newDoneRecorder()
	gone, cancel := context.WithCancel(t.Context())
	first, err := f.c.Join(gone, src.fill(rec.done))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := io.ReadAll(first); !errors.Is(err, context.Canceled) {
		t.Errorf("reader whose request went away: %v", err)
	}
	first.Close()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc, err := f.c.Join(t.Context(), src.fill(rec.done))
			if err != nil {
				t.Error(err)
				return
			}
			defer rc.Close()
			if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, data) {
				t.Errorf("shared reader: %d bytes, %v", len(got), err)
			}
		}()
	}
	close(src.release)
	wg.Wait()
	if p, err := rec.wait(t); err != nil || p == nil {
		t.Fatalf("Done(%v, %v)", p, err)
	} else {
		p.Release()
	}
	if n := src.calls.Load(); n != 1 {
		t.Errorf("%d fills of one blob, want 1", n)
	}
	select {
	case <-rec.called:
		t.Error("Done called more than once for one fill")
	default:
	}
}

// TestBlobCacheJoinPromotes: a prefetch queued behind busy fill slots
// starts at once when a request joins it.
func TestBlobCacheJoinPromotes(t *testing.T) {
	f := newBlobCacheFixture(t, BlobCacheOptions{MaxBytes: 16 << 20, MemoryBytes: -1, Jobs: 1})
	busy := newGatedSource(bytes.Repeat([]byte("b"), 1<<20))
	f.c.PrefetchFill(busy.fill(nil))
	<-busy.wroteHalf // holds the only slot
	data := bytes.Repeat([]byte("q"), 1<<20)
	queued := newGatedSource(data)
	close(queued.release)
	f.c.PrefetchFill(queued.fill(nil))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	rc, err := f.c.Join(ctx, queued.fill(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("promoted fill: %d bytes, %v", len(got), err)
	}
	if n := queued.calls.Load(); n != 1 {
		t.Errorf("queued source asked %d times", n)
	}
	close(busy.release)
}
