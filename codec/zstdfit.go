package codec

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// zstdFit passes zstd frames (and skippable frames) through while
// walking their structure (RFC 8878: frame header, blocks, checksum), and
// lowers the window each frame declares to the smallest that holds fit
// bytes: the decoder allocates the declared window whole before it
// decodes, and a window as large as the content decodes it exactly (no
// match reaches further back than the start). A frame whose window is its
// content size (single segment) declaring more than fit is refused
// (ErrTooLong): its content would be larger than the caller knows it to
// be. The decoder checks everything else.
type zstdFit struct {
	r        *bufio.Reader
	fit      int64
	pending  []byte // structure bytes read, not yet returned
	raw      int64  // payload bytes to pass through before the next structure
	next     func() error
	err      error
	checksum bool // the current frame ends with a content checksum
}

func newZstdFit(r io.Reader, fit int64) *zstdFit {
	z := &zstdFit{r: bufio.NewReaderSize(r, 64<<10), fit: fit}
	z.next = z.frame
	return z
}

func (z *zstdFit) Read(p []byte) (int, error) {
	for len(z.pending) == 0 && z.raw == 0 {
		if z.err != nil {
			return 0, z.err
		}
		if err := z.next(); err != nil {
			if err == io.ErrUnexpectedEOF {
				err = fmt.Errorf("codec: zstd: truncated: %w", io.ErrUnexpectedEOF)
			}
			z.err, z.pending, z.raw = err, nil, 0
		}
	}
	if len(z.pending) > 0 {
		n := copy(p, z.pending)
		z.pending = z.pending[n:]
		return n, nil
	}
	if int64(len(p)) > z.raw {
		p = p[:z.raw]
	}
	n, err := z.r.Read(p)
	z.raw -= int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// take reads n structure bytes, to be returned before anything else.
func (z *zstdFit) take(n int) ([]byte, error) {
	start := len(z.pending)
	z.pending = append(z.pending, make([]byte, n)...)
	if _, err := io.ReadFull(z.r, z.pending[start:]); err != nil {
		return nil, io.ErrUnexpectedEOF
	}
	return z.pending[start:], nil
}

// ErrTooLong: compressed content declares more than the size its reader
// was told (NewReaderSize).
var ErrTooLong = errors.New("content longer than its known size")

const (
	zstdMagic          = 0xFD2FB528
	zstdSkippableMagic = 0x184D2A50 // to 0x184D2A5F
)

// frame reads a frame header (or a skippable frame's), or the end of the
// input between frames.
func (z *zstdFit) frame() error {
	if _, err := z.r.Peek(1); err == io.EOF {
		return io.EOF
	}
	m, err := z.take(4)
	if err != nil {
		return err
	}
	magic := binary.LittleEndian.Uint32(m)
	if magic&0xFFFFFFF0 == zstdSkippableMagic {
		s, err := z.take(4)
		if err != nil {
			return err
		}
		z.raw = int64(binary.LittleEndian.Uint32(s))
		z.next = z.frame
		return nil
	}
	if magic != zstdMagic {
		return errors.New("codec: zstd: not a zstd frame")
	}
	d, err := z.take(1)
	if err != nil {
		return err
	}
	fhd := d[0]
	if fhd&0x08 != 0 {
		return errors.New("codec: zstd: reserved frame header bit set")
	}
	single := fhd&0x20 != 0
	z.checksum = fhd&0x04 != 0
	if !single {
		w, err := z.take(1)
		if err != nil {
			return err
		}
		if zstdWindow(w[0]) > z.fit {
			if c := zstdWindowFor(z.fit); c < w[0] {
				w[0] = c
			}
		}
	}
	if _, err := z.take([]int{0, 1, 2, 4}[fhd&3]); err != nil { // dictionary ID
		return err
	}
	fcsLen := []int{0, 2, 4, 8}[fhd>>6]
	if fcsLen == 0 && single {
		fcsLen = 1
	}
	f, err := z.take(fcsLen)
	if err != nil {
		return err
	}
	if single {
		var size uint64
		switch fcsLen {
		case 1:
			size = uint64(f[0])
		case 2:
			size = uint64(binary.LittleEndian.Uint16(f)) + 256
		case 4:
			size = uint64(binary.LittleEndian.Uint32(f))
		case 8:
			size = binary.LittleEndian.Uint64(f)
		}
		if size > uint64(z.fit) {
			return fmt.Errorf("codec: zstd: a frame of %d bytes, more than the %d the content holds: %w", size, z.fit, ErrTooLong)
		}
	}
	z.next = z.block
	return nil
}

// block reads a block header; its content passes through.
func (z *zstdFit) block() error {
	h, err := z.take(3)
	if err != nil {
		return err
	}
	v := uint32(h[0]) | uint32(h[1])<<8 | uint32(h[2])<<16
	last, typ, size := v&1 != 0, (v>>1)&3, int64(v>>3)
	switch typ {
	case 0, 2: // raw, compressed
		z.raw = size
	case 1: // RLE: one byte repeated size times
		z.raw = 1
	default:
		return errors.New("codec: zstd: reserved block type")
	}
	if last {
		z.next = z.end
	}
	return nil
}

// end reads a frame's content checksum, if it has one.
func (z *zstdFit) end() error {
	z.next = z.frame
	if z.checksum {
		_, err := z.take(4)
		return err
	}
	return z.frame()
}

// zstdWindow decodes a window descriptor (RFC 8878 3.1.1.1.2).
func zstdWindow(wd byte) int64 {
	base := int64(1) << (10 + wd>>3)
	return base + base/8*int64(wd&7)
}

// zstdWindowFor is the smallest window descriptor whose window holds n
// bytes.
func zstdWindowFor(n int64) byte {
	var wd byte
	for wd < 0xff && zstdWindow(wd) < n {
		wd++
	}
	return wd
}
