package backend

import (
	"context"
	"errors"
	"fmt"
	"io"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// resumingBody is the content of desc as a registry sends it. A read that
// fails transiently (a reset, a stall, a body cut short before desc.Size)
// is resumed where it stopped, by a new request: a Range request when the
// registry serves ranges, else a new fetch whose first bytes are skipped.
// Resuming draws on the attempts of the operation that opened the body.
// It checks nothing about the content: callers verify it (VerifyReader).
type resumingBody struct {
	ctx    context.Context // carries retry (attemptContext)
	retry  *retrier
	desc   ocispec.Descriptor
	reopen func(ctx context.Context) (io.ReadCloser, error)
	fail   func(err error) error // names the registry and operation

	rc    io.ReadCloser // nil after a failure, until reopened
	pos   int64         // where the reader of the body is
	rcPos int64         // where rc is
	err   error         // sticky, once retrying has given up
}

// newResumingBody wraps rc, the content of desc just opened for the
// operation that retry counts. The result can seek (for Range requests)
// if rc can.
func newResumingBody(ctx context.Context, retry *retrier, desc ocispec.Descriptor, rc io.ReadCloser,
	reopen func(ctx context.Context) (io.ReadCloser, error), fail func(error) error) io.ReadCloser {
	b := &resumingBody{ctx: ctx, retry: retry, desc: desc, reopen: reopen, fail: fail, rc: rc}
	if _, ok := rc.(io.Seeker); ok {
		return seekingBody{b}
	}
	return b
}

func (b *resumingBody) Read(p []byte) (int, error) {
	for {
		if b.err != nil {
			return 0, b.err
		}
		if b.rc == nil || b.rcPos != b.pos {
			if err := b.position(); err != nil {
				b.err = err
				return 0, err
			}
		}
		n, err := b.rc.Read(p)
		b.pos += int64(n)
		b.rcPos += int64(n)
		if err == io.EOF && b.desc.Size >= 0 && b.pos < b.desc.Size {
			err = io.ErrUnexpectedEOF // cut short
		}
		if err == nil || err == io.EOF {
			return n, err
		}
		err = b.fail(err)
		b.rc.Close()
		b.rc = nil
		if !b.retry.again(b.ctx, err) {
			b.err = err
			return n, err
		}
		if n > 0 {
			return n, nil
		}
	}
}

// position makes rc read from pos: by seeking the open stream if it can,
// else by opening a new one (retried).
func (b *resumingBody) position() error {
	if b.rc != nil {
		if s, ok := b.rc.(io.Seeker); ok {
			if _, err := s.Seek(b.pos, io.SeekStart); err == nil {
				b.rcPos = b.pos
				return nil
			}
		}
		b.rc.Close()
		b.rc = nil
	}
	for {
		rc, err := b.reopen(b.ctx)
		if err == nil {
			if err = skip(rc, b.pos); err == nil {
				b.rc, b.rcPos = rc, b.pos
				return nil
			}
			rc.Close()
			err = b.fail(fmt.Errorf("resuming at byte %d: %w", b.pos, err))
		}
		if !b.retry.again(b.ctx, err) {
			return err
		}
	}
}

// skip moves a fresh stream to off: a Range request if it can seek, else
// by reading and discarding. A stream whose seek failed is still at 0.
func skip(rc io.ReadCloser, off int64) error {
	if off == 0 {
		return nil
	}
	if s, ok := rc.(io.Seeker); ok {
		if _, err := s.Seek(off, io.SeekStart); err == nil {
			return nil
		}
	}
	n, err := io.CopyN(io.Discard, rc, off)
	if err == io.EOF {
		return fmt.Errorf("content ends after %d bytes: %w", n, io.ErrUnexpectedEOF)
	}
	return err
}

func (b *resumingBody) Close() error {
	var err error
	if b.rc != nil {
		err = b.rc.Close()
		b.rc = nil
	}
	b.err = errBodyClosed
	return err
}

var errBodyClosed = errors.New("read after close")

// seekingBody is a resumingBody whose registry serves ranges. Seek only
// moves the position; the next Read makes the request.
type seekingBody struct{ *resumingBody }

func (b seekingBody) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += b.pos
	case io.SeekEnd:
		offset += b.desc.Size
	default:
		return 0, errors.New("seek: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("seek: negative position")
	}
	b.pos = offset
	return offset, nil
}
