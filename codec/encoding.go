package codec

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ErrEncoding: a Content-Encoding nixoci does not decode, or a body that
// does not decode.
var ErrEncoding = errors.New("codec: content encoding")

// ErrTooLarge: a body decodes to more than its limit.
var ErrTooLarge = errors.New("codec: decoded body too large")

// MaxXzDict bounds the dictionary an xz body may ask for: the xz decoder
// allocates what the stream's header says, up to 4 GiB. Nix compresses
// with liblzma presets, whose largest dictionary (preset 9) is 64 MiB.
const MaxXzDict = 64 << 20

// maxZstdWindow bounds the window (and so the memory) of a zstd body;
// zstd's own default limit for decoders is 8 MiB at most levels, 128 MiB
// with long-distance matching, which Nix does not use.
const maxZstdWindow = 64 << 20

// ContentEncodings are the Content-Encoding values DecodeContent reads:
// what Nix 2.32 and later send with narinfo-compression, ls-compression
// and log-compression set to xz, zstd, br, gzip or bzip2 (the header is
// the compression method's name: HttpBinaryCacheStore::upsertFile in
// src/libstore/http-binary-cache-store.cc). "identity" and "none" mean
// no compression.
var ContentEncodings = []string{"xz", "zstd", "br", "gzip", "bzip2"}

// DecodeContent returns a reader of body decoded from the HTTP
// Content-Encoding enc, at most limit bytes of it (a longer decoding
// fails with ErrEncoding). Every decoder's memory is bounded whatever
// the body's headers ask: xz bodies are read whole (at most limit
// bytes) to check their dictionaries first, zstd windows are bounded,
// gzip, bzip2 and brotli need little by design.
func DecodeContent(body io.Reader, enc string, limit int64) (io.ReadCloser, error) {
	var r io.Reader
	closer := func() error { return nil }
	switch strings.ToLower(strings.TrimSpace(enc)) {
	case "", "identity", "none":
		r = body
	case "gzip", "x-gzip":
		g, err := gzip.NewReader(body)
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", ErrEncoding, err)
		}
		r, closer = g, g.Close
	case "bzip2":
		r = bzip2.NewReader(body)
	case "br":
		r = brotli.NewReader(body)
	case "zstd":
		d, err := zstd.NewReader(body, zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxWindow(maxZstdWindow), zstd.WithDecoderMaxMemory(uint64(limit)+maxZstdWindow))
		if err != nil {
			return nil, fmt.Errorf("%w: zstd: %v", ErrEncoding, err)
		}
		r, closer = d, func() error { d.Close(); return nil }
	case "xz":
		// The whole body, at most limit bytes: a compressed body larger
		// than what it may decode to is refused anyway.
		data, err := io.ReadAll(io.LimitReader(body, limit+1))
		if err != nil {
			return nil, err
		}
		if int64(len(data)) > limit {
			return nil, fmt.Errorf("%w: xz body larger than %d bytes", ErrTooLarge, limit)
		}
		if err := checkXzDicts(data, MaxXzDict); err != nil {
			return nil, err
		}
		d, err := xz.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("%w: xz: %v", ErrEncoding, err)
		}
		r = d
	default:
		return nil, fmt.Errorf("%w %q is not one of identity, %s", ErrEncoding, enc, strings.Join(ContentEncodings, ", "))
	}
	return &decoded{r: r, left: limit, limit: limit, close: closer, enc: enc}, nil
}

// decoded limits a decoder's output and names its errors.
type decoded struct {
	r     io.Reader
	left  int64
	limit int64
	close func() error
	enc   string
}

func (d *decoded) Read(p []byte) (int, error) {
	if d.left <= 0 {
		// One more byte tells a body of exactly the limit from a longer one.
		var one [1]byte
		n, err := d.r.Read(one[:])
		switch {
		case n > 0:
			return 0, fmt.Errorf("%w: %s body decodes to more than %d bytes", ErrTooLarge, d.enc, d.limit)
		case err == nil:
			return 0, nil // nothing yet: ask again
		case err != io.EOF:
			return 0, err // a body cut at its own limit, say: never an end
		}
		return 0, io.EOF
	}
	if int64(len(p)) > d.left {
		p = p[:d.left]
	}
	n, err := d.r.Read(p)
	d.left -= int64(n)
	if err != nil && err != io.EOF && d.enc != "" {
		err = fmt.Errorf("%w: %s: %v", ErrEncoding, d.enc, err)
	}
	return n, err
}

func (d *decoded) Close() error { return d.close() }

// checkXzDicts walks the xz streams in data from the end (stream footer,
// index, block headers; xz file format 1.0.4, sections 2 and 3) and
// refuses any LZMA2 filter whose dictionary exceeds max, before a decoder
// allocates it.
func checkXzDicts(data []byte, max uint64) error {
	bad := func(what string) error { return fmt.Errorf("%w: xz: %s", ErrEncoding, what) }
	end := len(data)
	for end > 0 {
		for end >= 4 && binary.LittleEndian.Uint32(data[end-4:end]) == 0 { // stream padding
			end -= 4
		}
		if end == 0 {
			break
		}
		if end < 24 || string(data[end-2:end]) != "YZ" {
			return bad("no stream footer")
		}
		footer := data[end-12 : end]
		indexSize := (int(binary.LittleEndian.Uint32(footer[4:8])) + 1) * 4
		indexStart := end - 12 - indexSize
		if indexStart < 12 {
			return bad("index larger than the stream")
		}
		idx := data[indexStart : end-12]
		if idx[0] != 0 {
			return bad("no index")
		}
		p := 1
		count, ok := uvarint(idx, &p)
		if !ok || count > uint64(len(idx)) {
			return bad("index")
		}
		var blocks []uint64
		var total uint64
		for i := uint64(0); i < count; i++ {
			unpadded, ok1 := uvarint(idx, &p)
			_, ok2 := uvarint(idx, &p)
			if !ok1 || !ok2 || unpadded == 0 {
				return bad("index record")
			}
			padded := (unpadded + 3) &^ 3
			blocks = append(blocks, padded)
			total += padded
			if total > uint64(indexStart) {
				return bad("blocks larger than the stream")
			}
		}
		start := indexStart - int(total) - 12
		if start < 0 || string(data[start:start+6]) != "\xfd7zXZ\x00" {
			return bad("no stream header where the index says")
		}
		off := start + 12
		for _, size := range blocks {
			if err := checkXzBlockHeader(data[off:off+int(size)], max); err != nil {
				return err
			}
			off += int(size)
		}
		end = start
	}
	return nil
}

func checkXzBlockHeader(b []byte, max uint64) error {
	bad := func(what string) error { return fmt.Errorf("%w: xz block header: %s", ErrEncoding, what) }
	if len(b) < 2 || b[0] == 0 {
		return bad("missing")
	}
	hsize := (int(b[0]) + 1) * 4
	if hsize > len(b) {
		return bad("larger than its block")
	}
	h := b[:hsize]
	flags := h[1]
	p := 2
	if flags&0x40 != 0 {
		if _, ok := uvarint(h, &p); !ok {
			return bad("compressed size")
		}
	}
	if flags&0x80 != 0 {
		if _, ok := uvarint(h, &p); !ok {
			return bad("uncompressed size")
		}
	}
	for i := 0; i < int(flags&3)+1; i++ {
		id, ok1 := uvarint(h, &p)
		psize, ok2 := uvarint(h, &p)
		if !ok1 || !ok2 || uint64(p)+psize > uint64(len(h)) {
			return bad("filter flags")
		}
		if id == 0x21 { // LZMA2
			if psize != 1 {
				return bad("LZMA2 properties")
			}
			bits := h[p]
			if bits > 40 {
				return bad("LZMA2 dictionary size")
			}
			dict := uint64(0xffffffff)
			if bits < 40 {
				dict = (2 | uint64(bits&1)) << (bits/2 + 11)
			}
			if dict > max {
				return fmt.Errorf("%w: xz: a dictionary of %d bytes, more than the %d allowed", ErrEncoding, dict, max)
			}
		}
		p += int(psize)
	}
	return nil
}

// uvarint reads xz's multibyte integer (at most 9 bytes) at *p.
func uvarint(b []byte, p *int) (uint64, bool) {
	var v uint64
	for i := 0; i < 9 && *p < len(b); i++ {
		c := b[*p]
		*p++
		v |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			return v, true
		}
	}
	return 0, false
}
