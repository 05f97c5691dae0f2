package codec

import (
	"compress/bzip2"
	"compress/gzip"
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
// the body's headers ask, as NewReader's: xz dictionaries (MaxXzDict),
// zstd windows (MaxZstdWindow); gzip, bzip2 and brotli need little by
// design.
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
			zstd.WithDecoderMaxWindow(MaxZstdWindow), zstd.WithDecoderMaxMemory(uint64(limit)+MaxZstdWindow))
		if err != nil {
			return nil, fmt.Errorf("%w: zstd: %v", ErrEncoding, err)
		}
		r, closer = d, func() error { d.Close(); return nil }
	case "xz":
		d, err := xz.NewReader(newXzGuard(body, MaxXzDict))
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
