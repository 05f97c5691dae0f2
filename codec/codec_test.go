package codec

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os/exec"
	"sync"
	"testing"

	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/spec"
)

// sample is compressible but not trivially so, and the same bytes with
// every Go version.
func sample(n int, seed uint64) []byte { return testenv.SampleData(n, seed) }

func compress(t *testing.T, c spec.Compression, in []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := NewWriter(&out, c)
	if err != nil {
		t.Fatal(err)
	}
	// Odd write sizes, so chunk boundaries fall inside writes.
	for p := in; len(p) > 0; {
		k := min(len(p), 7777)
		if _, err := w.Write(p[:k]); err != nil {
			t.Fatal(err)
		}
		p = p[k:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func decompress(t *testing.T, c spec.Compression, in []byte) []byte {
	t.Helper()
	r, err := NewReader(bytes.NewReader(in), c)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("%s: decompressing: %v", c, err)
	}
	return out
}

func withChunkSize(t *testing.T, n int) {
	old := xzChunkSize
	xzChunkSize = n
	t.Cleanup(func() { xzChunkSize = old })
}

func TestRoundTrip(t *testing.T) {
	withChunkSize(t, 64<<10)
	for _, c := range []spec.Compression{spec.CompressionNone, spec.CompressionZstd, spec.CompressionXz} {
		for _, n := range []int{0, 1, 64 << 10, 64<<10 + 1, 300 << 10} {
			in := sample(n, uint64(n))
			got := decompress(t, c, compress(t, c, in))
			if !bytes.Equal(got, in) {
				t.Errorf("%s, %d bytes: round trip differs (got %d bytes)", c, n, len(got))
			}
		}
	}
}

// TestXzChunksAreIndependentStreams checks the format SPEC.md promises:
// the output is the concatenation of each chunk compressed alone.
func TestXzChunksAreIndependentStreams(t *testing.T) {
	withChunkSize(t, 32<<10)
	in := sample(100<<10, 1)
	whole := compress(t, spec.CompressionXz, in)
	var concat []byte
	for p := in; len(p) > 0; {
		k := min(len(p), 32<<10)
		concat = append(concat, compress(t, spec.CompressionXz, p[:k])...)
		p = p[k:]
	}
	if !bytes.Equal(whole, concat) {
		t.Fatalf("chunked output (%d bytes) is not the concatenation of per-chunk streams (%d bytes)", len(whole), len(concat))
	}
}

// TestReproducibleUnderConcurrency compresses the same input from many
// goroutines at once: every output must be identical.
func TestReproducibleUnderConcurrency(t *testing.T) {
	withChunkSize(t, 16<<10)
	in := sample(200<<10, 2)
	for _, c := range []spec.Compression{spec.CompressionZstd, spec.CompressionXz} {
		want := sha256.Sum256(compress(t, c, in))
		var wg sync.WaitGroup
		errs := make(chan string, 8)
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if got := sha256.Sum256(compress(t, c, in)); got != want {
					errs <- string(c)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for c := range errs {
			t.Errorf("%s: output differs between concurrent runs", c)
		}
	}
}

// TestSystemXzReadsOutput checks against the real xz tool (liblzma), which
// is what Nix links.
func TestSystemXzReadsOutput(t *testing.T) {
	xzBin := testenv.Tool(t, "xz")
	withChunkSize(t, 32<<10)
	in := sample(100<<10, 3)
	cmd := exec.Command(xzBin, "-dc")
	cmd.Stdin = bytes.NewReader(compress(t, spec.CompressionXz, in))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz -dc: %v", err)
	}
	if !bytes.Equal(out, in) {
		t.Fatal("xz -dc output differs from input")
	}
}

func TestReadsBzip2(t *testing.T) {
	bzip2Bin := testenv.Tool(t, "bzip2")
	in := sample(10<<10, 4)
	cmd := exec.Command(bzip2Bin, "-c")
	cmd.Stdin = bytes.NewReader(in)
	bz, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := decompress(t, "bzip2", bz); !bytes.Equal(got, in) {
		t.Fatal("bzip2 round trip differs")
	}
}

func TestCorruptInputIsAnError(t *testing.T) {
	in := sample(50<<10, 5)
	for _, c := range []spec.Compression{spec.CompressionZstd, spec.CompressionXz} {
		z := compress(t, c, in)
		z[len(z)/2] ^= 0xff
		r, err := NewReader(bytes.NewReader(z), c)
		if err == nil {
			_, err = io.ReadAll(r)
			r.Close()
		}
		if err == nil {
			t.Errorf("%s: corrupt input decompressed without error", c)
		}
	}
}

func TestUnknownCompression(t *testing.T) {
	if _, err := NewWriter(io.Discard, "br"); err == nil {
		t.Error("NewWriter(br) succeeded")
	}
	if _, err := NewReader(bytes.NewReader(nil), "lz4"); err == nil {
		t.Error("NewReader(lz4) succeeded")
	}
}
