// Package countio counts the bytes that pass through readers and writers:
// the size of a stream being hashed, or a progress total that several
// concurrent transfers add to.
package countio

import (
	"errors"
	"io"
	"sync/atomic"
)

// Reader adds the number of bytes read from R to N, which may be shared
// by concurrent readers and read while they run. A nil N counts nothing.
type Reader struct {
	R io.Reader
	N *atomic.Int64
}

func (c Reader) Read(p []byte) (int, error) {
	n, err := c.R.Read(p)
	if c.N != nil {
		c.N.Add(int64(n))
	}
	return n, err
}

// ErrCannotSeek: Seek was called on a Reader whose R cannot seek.
var ErrCannotSeek = errors.New("countio: reader cannot seek")

// Seek seeks R if it can, so that wrapping a seekable body in a Reader
// keeps it replayable (a retried upload rewinds it); bytes read again are
// counted again.
func (c Reader) Seek(offset int64, whence int) (int64, error) {
	s, ok := c.R.(io.Seeker)
	if !ok {
		return 0, ErrCannotSeek
	}
	return s.Seek(offset, whence)
}

// Writer adds the number of bytes written to W to N, as Reader does.
type Writer struct {
	W io.Writer
	N *atomic.Int64
}

func (c Writer) Write(p []byte) (int, error) {
	n, err := c.W.Write(p)
	if c.N != nil {
		c.N.Add(int64(n))
	}
	return n, err
}
