package codec

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/spec"
)

// allocated decodes file with NewReaderSize(size) and returns the content
// and the bytes the decoding allocated.
func allocated(t *testing.T, c spec.Compression, file []byte, size int64) ([]byte, uint64, error) {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r, err := NewReaderSize(bytes.NewReader(file), c, size)
	if err != nil {
		return nil, 0, err
	}
	var out bytes.Buffer
	out.Grow(int(size))
	runtime.ReadMemStats(&before) // the output buffer is not the decoder's
	_, err = io.Copy(&out, r)
	r.Close()
	runtime.ReadMemStats(&after)
	return out.Bytes(), after.TotalAlloc - before.TotalAlloc, err
}

// TestNewReaderSizeFits: what xz-utils and zstd write at any level for a
// small input declares a dictionary or window of the level (up to 64 and
// 128 MiB), which a decoder allocates whole; told the content's size,
// the decoder holds one that fits it, and decodes the content exactly,
// single or concatenated streams and frames alike.
func TestNewReaderSizeFits(t *testing.T) {
	in := sample(200<<10, 3)
	for _, tc := range []struct {
		c    spec.Compression
		tool string
		args []string
	}{
		{spec.CompressionXz, "xz", []string{"-6"}},
		{spec.CompressionXz, "xz", []string{"-9"}},
		{spec.CompressionXz, "xz", []string{"--lzma2=dict=64MiB"}},
		{spec.CompressionXz, "xz", []string{"-T4", "--block-size=64KiB"}},
		{spec.CompressionZstd, "zstd", []string{"-3", "--no-content-size"}},
		{spec.CompressionZstd, "zstd", []string{"-19", "--no-content-size"}},
		{spec.CompressionZstd, "zstd", []string{"--ultra", "-22", "--no-content-size"}},
		{spec.CompressionZstd, "zstd", []string{"--long=27", "--no-content-size", "--no-check"}},
		{spec.CompressionZstd, "zstd", []string{"-3"}}, // single segment: window = content size
	} {
		cmd := exec.Command(testenv.Tool(t, tc.tool), append([]string{"-c"}, tc.args...)...)
		cmd.Stdin = bytes.NewReader(in)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %v: %v", tc.tool, tc.args, err)
		}
		file := append(bytes.Clone(out), out...) // concatenated
		if tc.c == spec.CompressionXz {
			file = append(append(bytes.Clone(out), 0, 0, 0, 0), out...)
		}
		want := append(bytes.Clone(in), in...)
		got, alloc, err := allocated(t, tc.c, file, int64(len(want)))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s %v: %d bytes, %v; want the content", tc.tool, tc.args, len(got), err)
		}
		// Unfitted, two streams or frames of these levels allocate 16 MiB
		// (xz -6) to 256 MiB (zstd -22) (TotalAlloc counts each).
		if limit := uint64(8 << 20); alloc > limit {
			t.Errorf("%s %v: decoding %d KiB allocated %d KiB, over %d KiB", tc.tool, tc.args, len(want)>>10, alloc>>10, limit>>10)
		}
	}
	// What nixoci writes: several xz streams for large NARs.
	for _, c := range []spec.Compression{spec.CompressionXz, spec.CompressionZstd} {
		file := compress(t, c, in)
		if got, _, err := allocated(t, c, file, int64(len(in))); err != nil || !bytes.Equal(got, in) {
			t.Errorf("nixoci's %s: %d bytes, %v", c, len(got), err)
		}
	}
}

// TestNewReaderSizeRefuses: a zstd frame declaring more content than the
// caller knows of is refused before it is decoded; an xz block header
// whose CRC32 is wrong is not mended (the decoder refuses it); content
// longer than size is not cut by the reader (the caller bounds it) but a
// dictionary too small for it decodes it wrongly or fails, never as the
// content.
func TestNewReaderSizeRefuses(t *testing.T) {
	in := sample(64<<10, 4)
	src := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(src, in, 0o644); err != nil {
		t.Fatal(err)
	}
	// From a file, zstd records the content size (a single-segment frame).
	single, err := exec.Command(testenv.Tool(t, "zstd"), "-c", "-3", src).Output()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := allocated(t, spec.CompressionZstd, single, 1000); !errors.Is(err, ErrTooLong) {
		t.Errorf("a zstd frame of more content than known: %v, want ErrTooLong", err)
	}
	if got, _, err := allocated(t, spec.CompressionZstd, single, int64(len(in))); err != nil || !bytes.Equal(got, in) {
		t.Errorf("the same frame, its size known: %d bytes, %v", len(got), err)
	}
	// Without it, a window fit to less than the content fails.
	zs := exec.Command(testenv.Tool(t, "zstd"), "-c", "-3")
	zs.Stdin = bytes.NewReader(in)
	streamed, err := zs.Output()
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := allocated(t, spec.CompressionZstd, streamed, 1000); err == nil && bytes.Equal(got, in) {
		t.Error("content larger than its window decoded")
	}
	file := compress(t, spec.CompressionXz, in)
	bad := bytes.Clone(file)
	bad[12+4] ^= 1 // the first block header's dictionary byte; its CRC32 no longer matches
	if _, _, err := allocated(t, spec.CompressionXz, bad, int64(len(in))); err == nil {
		t.Error("an xz block header with a wrong CRC32 decoded")
	}
	if got, _, err := allocated(t, spec.CompressionXz, file, int64(len(in))); err != nil || !bytes.Equal(got, in) {
		t.Errorf("the same file unchanged: %d bytes, %v", len(got), err)
	}
}
