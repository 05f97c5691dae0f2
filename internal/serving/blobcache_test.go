package serving

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/backend"
)

// blobCacheFixture is a layout holding blobs, and a blob cache over it.
type blobCacheFixture struct {
	t  *testing.T
	l  *backend.Layout
	c  *BlobCache
	bs *Backends
}

func newBlobCacheFixture(t *testing.T, opts BlobCacheOptions) *blobCacheFixture {
	l, err := backend.OpenLayout(filepath.Join(t.TempDir(), "layout"), true)
	if err != nil {
		t.Fatal(err)
	}
	bs, err := NewBackends([]Backend{{Name: "layout", Target: l}}, BackendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	opts.Dir = filepath.Join(t.TempDir(), "cache")
	c, err := NewBlobCache(bs, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &blobCacheFixture{t, l, c, bs}
}

// blob stores data and returns where it is.
func (f *blobCacheFixture) blob(data []byte) BlobLocation {
	desc := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := f.l.Push(context.Background(), desc, bytes.NewReader(data)); err != nil {
		f.t.Fatal(err)
	}
	return BlobLocation{0, desc}
}

// fetch prefetches loc and waits for the fill to end.
func (f *blobCacheFixture) fetch(loc BlobLocation) {
	f.c.Prefetch(loc)
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.c.mu.Lock()
		_, filling := f.c.inflight[loc.Desc.Digest]
		f.c.mu.Unlock()
		if !filling {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("fill of %s did not end", loc.Desc.Digest)
		}
		time.Sleep(time.Millisecond)
	}
}

// read opens loc's blob from the cache and reads it whole, then again
// from an offset; nil if it is not cached.
func (f *blobCacheFixture) read(loc BlobLocation) []byte {
	rc := f.c.Open(context.Background(), loc.Desc.Digest)
	if rc == nil {
		return nil
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := rc.Seek(1, io.SeekStart); err != nil {
		f.t.Fatal(err)
	}
	if rest, err := io.ReadAll(rc); err != nil || !bytes.Equal(rest, data[1:]) {
		f.t.Errorf("after Seek(1): %d bytes, %v; want the blob from its second byte", len(rest), err)
	}
	return data
}

func (f *blobCacheFixture) inFile(loc BlobLocation) bool {
	_, err := os.Stat(f.c.path(loc.Desc.Digest))
	return err == nil
}

// TestBlobCacheTiers: small blobs are kept in memory within their own
// limit, evicting the least recently used; larger ones go to files; every
// blob is verified before it is kept, and reads back whole and from an
// offset.
func TestBlobCacheTiers(t *testing.T) {
	f := newBlobCacheFixture(t, BlobCacheOptions{MaxBytes: 16 << 20, MemoryBytes: 3 << 10})
	small1 := bytes.Repeat([]byte("1"), 1<<10)
	small2 := bytes.Repeat([]byte("2"), 1<<10)
	small3 := bytes.Repeat([]byte("3"), 1<<10)
	big := bytes.Repeat([]byte("b"), MemoryBlobMax+1)
	locs := map[string]BlobLocation{}
	for name, data := range map[string][]byte{"small1": small1, "small2": small2, "small3": small3, "big": big} {
		locs[name] = f.blob(data)
	}
	f.fetch(locs["small1"])
	f.fetch(locs["small2"])
	if got := f.read(locs["small1"]); !bytes.Equal(got, small1) { // small1 now most recent
		t.Fatalf("small1 from the cache: %d bytes", len(got))
	}
	f.fetch(locs["small3"]) // 3 KiB of small blobs: over the limit with a fourth
	f.fetch(locs["big"])
	if f.inFile(locs["small1"]) || f.inFile(locs["small3"]) {
		t.Error("a small blob was written to a file")
	}
	if !f.inFile(locs["big"]) {
		t.Error("a blob over MemoryBlobMax is not in a file")
	}
	if got := f.read(locs["big"]); !bytes.Equal(got, big) {
		t.Errorf("big from the cache: %d bytes", len(got))
	}
	if f.c.mem > f.c.memMax {
		t.Errorf("%d bytes in memory, over the %d limit", f.c.mem, f.c.memMax)
	}
	small4 := bytes.Repeat([]byte("4"), 1<<10)
	locs["small4"] = f.blob(small4)
	f.fetch(locs["small4"])
	if got := f.read(locs["small2"]); got != nil {
		t.Error("small2, the least recently used, was not evicted")
	}
	for _, name := range []string{"small1", "small3", "small4"} {
		if got := f.read(locs[name]); got == nil {
			t.Errorf("%s evicted; want only small2 gone", name)
		}
	}
	if f.c.mem > f.c.memMax {
		t.Errorf("%d bytes in memory, over the %d limit", f.c.mem, f.c.memMax)
	}
}

// TestBlobCacheRefusesCorrupt: a blob whose bytes do not match its digest
// is kept neither in memory nor on disk.
func TestBlobCacheRefusesCorrupt(t *testing.T) {
	for _, size := range []int{1 << 10, MemoryBlobMax + 1} {
		f := newBlobCacheFixture(t, BlobCacheOptions{MaxBytes: 16 << 20})
		data := bytes.Repeat([]byte("c"), size)
		loc := f.blob(data)
		path := filepath.Join(f.l.Dir(), "blobs", "sha256", loc.Desc.Digest.Encoded())
		bad := bytes.Clone(data)
		bad[size/2] ^= 1
		if err := os.WriteFile(path, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		f.fetch(loc)
		if got := f.read(loc); got != nil {
			t.Errorf("%d-byte corrupt blob cached", size)
		}
		if f.inFile(loc) {
			t.Errorf("%d-byte corrupt blob left a file", size)
		}
	}
}

// TestBlobCacheMemoryOff: with MemoryBytes negative every blob goes to a
// file.
func TestBlobCacheMemoryOff(t *testing.T) {
	f := newBlobCacheFixture(t, BlobCacheOptions{MaxBytes: 16 << 20, MemoryBytes: -1})
	data := []byte("a small blob")
	loc := f.blob(data)
	f.fetch(loc)
	if !f.inFile(loc) {
		t.Error("a small blob is not in a file with the memory tier off")
	}
	if got := f.read(loc); !bytes.Equal(got, data) {
		t.Errorf("read back %q", got)
	}
}

// gatedFetch holds every blob fetch until release is closed, counting
// the fetches started.
type gatedFetch struct {
	backend.Target
	release chan struct{}
	mu      sync.Mutex
	started int
}

func (g *gatedFetch) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	g.mu.Lock()
	g.started++
	g.mu.Unlock()
	<-g.release
	return g.Target.Fetch(ctx, d)
}

// TestBlobCacheCountsFillsInFlight: files being written count against
// the limit: with blobs of a quarter of it, at most four fills run at
// once, the others are skipped, and the disk used (partial files
// included) never passes the limit.
func TestBlobCacheCountsFillsInFlight(t *testing.T) {
	f := newBlobCacheFixture(t, BlobCacheOptions{MaxBytes: 4 << 20, MemoryBytes: -1})
	g := &gatedFetch{Target: f.l, release: make(chan struct{})}
	f.bs.list[0].Target = g
	var locs []BlobLocation
	for i := range 8 {
		locs = append(locs, f.blob(bytes.Repeat([]byte{byte(i)}, 1<<20)))
	}
	for _, loc := range locs {
		f.c.Prefetch(loc)
	}
	// Every fill has either reserved its room and waits in Fetch, or
	// was skipped.
	deadline := time.Now().Add(10 * time.Second)
	for {
		g.mu.Lock()
		started := g.started
		g.mu.Unlock()
		f.c.mu.Lock()
		inflight := len(f.c.inflight)
		f.c.mu.Unlock()
		if inflight == started {
			if started != 4 {
				t.Errorf("%d fills of 1 MiB started in a cache of 4 MiB, want 4", started)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d fills in flight, %d started", inflight, started)
		}
		time.Sleep(time.Millisecond)
	}
	close(g.release)
	for _, loc := range locs {
		f.fetch(loc) // waits for the fill, if any
	}
	var used int64
	ents, _ := os.ReadDir(f.c.dir)
	for _, e := range ents {
		info, _ := e.Info()
		used += info.Size()
	}
	if used > 4<<20 {
		t.Errorf("%d bytes on disk, over the 4 MiB limit", used)
	}
}
