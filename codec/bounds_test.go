package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os/exec"
	"runtime"
	"testing"

	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/spec"
)

// TestXzFromXzUtils: what xz-utils writes with every option Nix or a
// user may use (presets up to 9 and extreme, every check, several
// blocks, concatenated streams with padding) passes the dictionary
// bound unchanged. (BCJ and delta filters, which Nix never writes, the
// decoder does not read.)
func TestXzFromXzUtils(t *testing.T) {
	xz := testenv.Tool(t, "xz")
	in := sample(512<<10, 7)
	for _, args := range [][]string{
		{"-0"}, {"-6"}, {"-9"},
		{"--check=none"}, {"--check=crc32"}, {"--check=sha256"},
		{"-T4", "--block-size=100KiB"},
		{"--lzma2=dict=64MiB"},
	} {
		cmd := exec.Command(xz, append([]string{"-c"}, args...)...)
		cmd.Stdin = bytes.NewReader(in)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("xz %v: %v", args, err)
		}
		// Twice, with stream padding between: concatenated streams.
		file := append(append(append([]byte(nil), out...), 0, 0, 0, 0), out...)
		got := decompress(t, spec.CompressionXz, file)
		if !bytes.Equal(got, append(append([]byte(nil), in...), in...)) {
			t.Errorf("xz %v: content differs after the guard", args)
		}
	}
}

// withXzDict rewrites the LZMA2 dictionary byte of every block header of
// an xz file written by NewWriter (one filter, no sizes) to dict, with
// the header's CRC32 recomputed: the stream then declares that
// dictionary and is otherwise valid.
func withXzDict(t *testing.T, file []byte, dict byte) []byte {
	t.Helper()
	out := bytes.Clone(file)
	// Stream header (12 bytes), then the first block header: size byte,
	// flags, filter ID 0x21, properties size 1, the dictionary byte.
	h := out[12:]
	size := (int(h[0]) + 1) * 4
	if h[1] != 0 || h[2] != 0x21 || h[3] != 1 {
		t.Fatalf("unexpected block header % x", h[:size])
	}
	h[4] = dict
	binary.LittleEndian.PutUint32(h[size-4:], crc32.ChecksumIEEE(h[:size-4]))
	return out
}

// TestXzDictBound: an xz stream declaring a dictionary over MaxXzDict (4
// GiB, or just over the bound) fails with ErrDictTooLarge before the
// decoder allocates it; one at the bound decodes.
func TestXzDictBound(t *testing.T) {
	in := sample(100<<10, 3)
	file := compress(t, spec.CompressionXz, in)
	for _, tc := range []struct {
		dict byte
		want error
	}{
		{40, ErrDictTooLarge}, // 4 GiB - 1
		{29, ErrDictTooLarge}, // 96 MiB
		{28, nil},             // 64 MiB
	} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r, err := NewReader(bytes.NewReader(withXzDict(t, file, tc.dict)), spec.CompressionXz)
		if err == nil {
			var got []byte
			got, err = io.ReadAll(r)
			if err == nil && !bytes.Equal(got, in) {
				t.Errorf("dict byte %d: content differs", tc.dict)
			}
		}
		runtime.ReadMemStats(&after)
		if !errors.Is(err, tc.want) {
			t.Errorf("dict byte %d (%d MiB): %v, want %v", tc.dict, lzma2Dict(tc.dict)>>20, err, tc.want)
		}
		if tc.want != nil {
			if grown := after.TotalAlloc - before.TotalAlloc; grown > 16<<20 {
				t.Errorf("dict byte %d: %d MiB allocated before the refusal", tc.dict, grown>>20)
			}
		}
	}
}

// TestZstdWindowBound: a zstd frame declaring a window over
// MaxZstdWindow fails with ErrDictTooLarge.
func TestZstdWindowBound(t *testing.T) {
	// Magic, frame header descriptor (no single segment, no checksum,
	// no dictionary, no content size), window descriptor (exponent 22:
	// a 4 GiB window), then a last raw block of 3 bytes.
	frame := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 22 << 3, 0x19, 0x00, 0x00, 'a', 'b', 'c'}
	r, err := NewReader(bytes.NewReader(frame), spec.CompressionZstd)
	if err == nil {
		_, err = io.ReadAll(r)
	}
	if !errors.Is(err, ErrDictTooLarge) {
		t.Errorf("zstd frame with a 4 GiB window: %v, want ErrDictTooLarge", err)
	}
	// The same frame with a 1 KiB window decodes.
	frame[5] = 0
	if got := decompress(t, spec.CompressionZstd, frame); string(got) != "abc" {
		t.Errorf("small window: %q", got)
	}
}

// TestXzGuardTruncated: a stream cut anywhere is an error, never a
// shorter output that looks complete.
func TestXzGuardTruncated(t *testing.T) {
	file := compress(t, spec.CompressionXz, sample(50<<10, 5))
	for _, n := range []int{0, 5, 12, 13, 20, len(file) / 2, len(file) - 13, len(file) - 1} {
		r, err := NewReader(bytes.NewReader(file[:n]), spec.CompressionXz)
		if err == nil {
			_, err = io.ReadAll(r)
		}
		if err == nil {
			t.Errorf("cut at %d of %d: no error", n, len(file))
		}
	}
}
