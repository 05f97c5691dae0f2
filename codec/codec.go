package codec

import (
	"compress/bzip2"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/nixoci/nixoci/spec"
)

// NewWriter returns a writer that compresses into w with c's reproducible
// settings. Close flushes it; it does not close w.
func NewWriter(w io.Writer, c spec.Compression) (io.WriteCloser, error) {
	switch c {
	case spec.CompressionNone:
		return nopCloser{w}, nil
	case spec.CompressionZstd:
		return zstd.NewWriter(w,
			zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(spec.ZstdWindowSize),
			zstd.WithEncoderCRC(true),
			zstd.WithZeroFrames(true))
	case spec.CompressionXz:
		return newXzWriter(w), nil
	}
	return nil, fmt.Errorf("codec: cannot write compression %q", c)
}

// NewReader returns a reader of the decompressed content of r. Besides
// what NewWriter writes it reads bzip2, the compression of old caches.
// xz input may hold several concatenated streams. Input is untrusted: a
// stream declaring an xz dictionary over MaxXzDict or a zstd window over
// MaxZstdWindow fails (ErrDictTooLarge) before the decoder allocates it.
func NewReader(r io.Reader, c spec.Compression) (io.ReadCloser, error) {
	return newReader(r, c, MaxXzDict)
}

// NewReaderSize is NewReader for content the caller knows decompresses
// to at most size bytes (size > 0; a NAR whose narinfo says NarSize):
// its decoder holds no larger dictionary or window than that content
// needs. An xz block or zstd frame declaring more (xz and zstd write the
// dictionary of their level whatever the input's size: 8 MiB for a NAR
// of a few KiB at xz -6) is decoded with one that fits size, which
// decodes it exactly; a zstd frame declaring content larger than size is
// refused (ErrTooLong). See DecoderMemory. The caller still bounds
// what it reads to size.
func NewReaderSize(r io.Reader, c spec.Compression, size int64) (io.ReadCloser, error) {
	if size <= 0 {
		return NewReader(r, c)
	}
	switch c {
	case spec.CompressionZstd:
		return newReader(newZstdFit(r, size), c, MaxXzDict)
	case spec.CompressionXz:
		g := newXzGuard(r, MaxXzDict)
		g.fit = size
		d, err := xz.NewReader(g)
		if err != nil {
			return nil, fmt.Errorf("codec: xz: %w", err)
		}
		return io.NopCloser(d), nil
	}
	return NewReader(r, c)
}

// DecoderMemory is the most memory the dictionary or window of a decoder
// NewReaderSize makes for c and size holds.
func DecoderMemory(c spec.Compression, size int64) int64 {
	switch c {
	case spec.CompressionXz:
		return min(MaxXzDict, lzma2Dict(lzma2DictFor(size)))
	case spec.CompressionZstd:
		return min(MaxZstdWindow, zstdWindow(zstdWindowFor(size))) + 128<<10 // a block
	}
	return 0
}

// newReader is NewReader with xz dictionaries bounded by xzDict.
func newReader(r io.Reader, c spec.Compression, xzDict int64) (io.ReadCloser, error) {
	switch c {
	case spec.CompressionNone:
		return io.NopCloser(r), nil
	case spec.CompressionZstd:
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(MaxZstdWindow))
		if err != nil {
			return nil, fmt.Errorf("codec: zstd: %w", err)
		}
		return zstdReader{d}, nil
	case spec.CompressionXz:
		d, err := xz.NewReader(newXzGuard(r, xzDict))
		if err != nil {
			return nil, fmt.Errorf("codec: xz: %w", err)
		}
		return io.NopCloser(d), nil
	case "bzip2":
		return io.NopCloser(bzip2.NewReader(r)), nil
	}
	return nil, fmt.Errorf("codec: cannot read compression %q", c)
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

type zstdReader struct{ *zstd.Decoder }

func (z zstdReader) Read(p []byte) (int, error) {
	n, err := z.Decoder.Read(p)
	if errors.Is(err, zstd.ErrWindowSizeExceeded) {
		err = fmt.Errorf("codec: zstd: %w: %w", ErrDictTooLarge, err)
	}
	return n, err
}

func (z zstdReader) Close() error {
	z.Decoder.Close()
	return nil
}
