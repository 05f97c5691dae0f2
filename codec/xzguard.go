package codec

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// MaxXzDict bounds the LZMA2 dictionary an xz stream may declare: the
// decoder allocates it before reading any data, and a stream header of
// a few bytes can ask for 4 GiB. Nix writes xz with liblzma presets 0 to
// 9, whose largest dictionary is 64 MiB (preset 9; the default, 6, uses
// 8 MiB); nixoci writes 32 MiB (spec.XzDictCap).
const MaxXzDict = 64 << 20

// MaxZstdWindow bounds the window a zstd frame may declare: Nix's zstd
// levels go up to 22 (window log 27, 128 MiB; the default level uses
// 8 MiB or less), without long-distance mode; nixoci writes 8 MiB
// (spec.ZstdWindowSize).
const MaxZstdWindow = 128 << 20

// ErrDictTooLarge: a compressed stream declares a dictionary or window
// larger than MaxXzDict or MaxZstdWindow.
var ErrDictTooLarge = errors.New("codec: dictionary or window over the decoder's bound")

// xzGuard passes an xz file (one or more concatenated streams) through
// unchanged while walking its structure (the xz file format 1.1.0:
// stream header, blocks of LZMA2 chunks, index, stream footer, padding),
// so that a block header declaring an LZMA2 dictionary over max fails
// before the decoder behind it reads the header and allocates. The
// decoder checks everything else (checksums, the index against the
// blocks); the guard needs only the lengths to find each block header.
type xzGuard struct {
	r       *bufio.Reader
	max     int64
	fit     int64  // > 0: the content decodes to at most fit bytes (see NewReaderSize)
	pending []byte // structure bytes read and checked, not yet returned
	raw     int64  // payload bytes to pass through before the next structure
	next    func() error
	err     error

	streams  int
	check    int   // size of the current stream's block check
	blockLen int64 // bytes of the current block so far (header and data)
}

func newXzGuard(r io.Reader, max int64) *xzGuard {
	g := &xzGuard{r: bufio.NewReaderSize(r, 64<<10), max: max}
	g.next = g.streamHeader
	return g
}

func (g *xzGuard) Read(p []byte) (int, error) {
	for len(g.pending) == 0 && g.raw == 0 {
		if g.err != nil {
			return 0, g.err
		}
		if err := g.next(); err != nil {
			if err == io.ErrUnexpectedEOF {
				err = fmt.Errorf("codec: xz: truncated: %w", io.ErrUnexpectedEOF)
			}
			// What was read of a refused structure never reaches the
			// decoder.
			g.err, g.pending, g.raw = err, nil, 0
		}
	}
	if len(g.pending) > 0 {
		n := copy(p, g.pending)
		g.pending = g.pending[n:]
		return n, nil
	}
	if int64(len(p)) > g.raw {
		p = p[:g.raw]
	}
	n, err := g.r.Read(p)
	g.raw -= int64(n)
	g.blockLen += int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// take reads n structure bytes, to be returned before anything else.
func (g *xzGuard) take(n int) ([]byte, error) {
	start := len(g.pending)
	g.pending = append(g.pending, make([]byte, n)...)
	if _, err := io.ReadFull(g.r, g.pending[start:]); err != nil {
		return nil, io.ErrUnexpectedEOF
	}
	g.blockLen += int64(n)
	return g.pending[start:], nil
}

// varint reads an xz multibyte integer (at most 9 bytes).
func (g *xzGuard) varint() (uint64, error) {
	var v uint64
	for i := 0; i < 9; i++ {
		b, err := g.take(1)
		if err != nil {
			return 0, err
		}
		v |= uint64(b[0]&0x7f) << (7 * i)
		if b[0]&0x80 == 0 {
			return v, nil
		}
	}
	return 0, errors.New("codec: xz: malformed integer")
}

var xzHeaderMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}

// xzCheckSizes are the sizes of the check of each check ID.
var xzCheckSizes = [16]int{0, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64}

// streamHeader reads a stream header, or the end of the file after the
// padding of a stream.
func (g *xzGuard) streamHeader() error {
	if g.streams > 0 {
		// Stream padding: zero bytes, four at a time.
		for {
			b, err := g.r.Peek(4)
			if len(b) == 0 && err == io.EOF {
				return io.EOF
			}
			if err != nil {
				return io.ErrUnexpectedEOF
			}
			if !bytes.Equal(b, []byte{0, 0, 0, 0}) {
				break
			}
			if _, err := g.take(4); err != nil {
				return err
			}
		}
	}
	h, err := g.take(12)
	if err != nil {
		return err
	}
	if !bytes.Equal(h[:6], xzHeaderMagic) || h[6] != 0 || h[7]&0xf0 != 0 {
		return errors.New("codec: xz: not an xz stream header")
	}
	g.check = xzCheckSizes[h[7]&0x0f]
	g.streams++
	g.next = g.blockOrIndex
	return nil
}

// blockOrIndex reads a block header, checking its LZMA2 dictionary, or
// the index and footer that end the stream.
func (g *xzGuard) blockOrIndex() error {
	g.blockLen = 0
	b, err := g.take(1)
	if err != nil {
		return err
	}
	if b[0] == 0 {
		return g.index()
	}
	h, err := g.take(int(b[0])*4 + 3) // the rest of the header, CRC32 included
	if err != nil {
		return err
	}
	dict, err := g.checkFilters(h[:len(h)-4])
	if err != nil {
		return err
	}
	if g.fit > 0 && dict >= 0 {
		g.fitDict(h, dict)
	}
	g.next = g.chunk
	return nil
}

// fitDict lowers the LZMA2 dictionary of the block header h (its size
// byte before it in pending, its CRC32 last), whose dictionary byte is
// h[at], to the smallest that holds g.fit bytes, and recomputes the
// header's CRC32. An LZMA2 dictionary as large as the content decodes it
// exactly (no match reaches further back than the start). A header whose
// CRC32 is wrong is left for the decoder to refuse.
func (g *xzGuard) fitDict(h []byte, at int) {
	hdr := g.pending[len(g.pending)-1-len(h):] // size byte, then h
	sum := hdr[len(hdr)-4:]
	if binary.LittleEndian.Uint32(sum) != crc32.ChecksumIEEE(hdr[:len(hdr)-4]) {
		return
	}
	c := lzma2DictFor(g.fit)
	if c >= h[at] {
		return
	}
	h[at] = c
	binary.LittleEndian.PutUint32(sum, crc32.ChecksumIEEE(hdr[:len(hdr)-4]))
}

// lzma2DictFor is the smallest LZMA2 dictionary size byte whose
// dictionary holds n bytes.
func lzma2DictFor(n int64) byte {
	var c byte
	for c < 40 && lzma2Dict(c) < n {
		c++
	}
	return c
}

// checkFilters reads a block header's flags, sizes and filter flags and
// checks the LZMA2 filter's dictionary. It returns where in h the
// dictionary byte is (-1 if no LZMA2 filter).
func (g *xzGuard) checkFilters(h []byte) (int, error) {
	r := bytes.NewReader(h)
	flags, _ := r.ReadByte()
	if flags&0x3c != 0 {
		return -1, errors.New("codec: xz: reserved block flags set")
	}
	for _, present := range []bool{flags&0x40 != 0, flags&0x80 != 0} {
		if present {
			if _, err := readVarint(r); err != nil {
				return -1, err
			}
		}
	}
	at := -1
	for i := 0; i <= int(flags&3); i++ {
		id, err := readVarint(r)
		if err != nil {
			return -1, err
		}
		size, err := readVarint(r)
		if err != nil || size > uint64(r.Len()) {
			return -1, errors.New("codec: xz: malformed filter flags")
		}
		offset := len(h) - r.Len()
		props := make([]byte, size)
		r.Read(props)
		if id != 0x21 { // not LZMA2 (BCJ or delta): no dictionary
			continue
		}
		if size != 1 || props[0] > 40 {
			return -1, errors.New("codec: xz: malformed LZMA2 properties")
		}
		if dict := lzma2Dict(props[0]); dict > g.max {
			return -1, fmt.Errorf("codec: xz: the stream declares a %d MiB dictionary, over the %d MiB bound: %w", dict>>20, g.max>>20, ErrDictTooLarge)
		}
		at = offset
	}
	return at, nil
}

// lzma2Dict decodes an LZMA2 dictionary size byte (at most 40).
func lzma2Dict(c byte) int64 {
	if c == 40 {
		return 1<<32 - 1
	}
	return int64(2|c&1) << (c/2 + 11)
}

func readVarint(r *bytes.Reader) (uint64, error) {
	var v uint64
	for i := 0; i < 9; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, errors.New("codec: xz: malformed integer")
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			return v, nil
		}
	}
	return 0, errors.New("codec: xz: malformed integer")
}

// chunk reads an LZMA2 chunk header; the chunk's data passes through.
// The end marker is followed by the block padding and check.
func (g *xzGuard) chunk() error {
	c, err := g.take(1)
	if err != nil {
		return err
	}
	switch ctl := c[0]; {
	case ctl == 0: // end of the block's data
		g.raw = (4-g.blockLen%4)%4 + int64(g.check)
		g.next = g.blockOrIndex
	case ctl == 1 || ctl == 2: // uncompressed chunk
		s, err := g.take(2)
		if err != nil {
			return err
		}
		g.raw = int64(s[0])<<8 | int64(s[1]) + 1
	case ctl >= 0x80: // LZMA chunk
		n := 4
		if (ctl>>5)&3 >= 2 {
			n++ // new properties
		}
		s, err := g.take(n)
		if err != nil {
			return err
		}
		g.raw = int64(s[2])<<8 | int64(s[3]) + 1
	default:
		return errors.New("codec: xz: invalid LZMA2 chunk")
	}
	return nil
}

// index reads the index (its indicator read) and the stream footer.
func (g *xzGuard) index() error {
	n, err := g.varint()
	if err != nil {
		return err
	}
	for ; n > 0; n-- {
		for range 2 {
			if _, err := g.varint(); err != nil {
				return err
			}
		}
		if len(g.pending) > 64<<10 {
			// Records pass through as they are read; an index of any
			// length never piles up here.
			g.next = func() error { return g.records(n - 1) }
			return nil
		}
	}
	return g.indexEnd()
}

// records reads the rest of a long index.
func (g *xzGuard) records(n uint64) error {
	for ; n > 0; n-- {
		for range 2 {
			if _, err := g.varint(); err != nil {
				return err
			}
		}
		if len(g.pending) > 64<<10 {
			g.next = func() error { return g.records(n - 1) }
			return nil
		}
	}
	return g.indexEnd()
}

// indexEnd reads the index padding and CRC32 and the stream footer.
func (g *xzGuard) indexEnd() error {
	if _, err := g.take(int((4-g.blockLen%4)%4) + 4 + 12); err != nil {
		return err
	}
	g.next = g.streamHeader
	return nil
}
