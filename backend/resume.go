package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// OpenResuming opens a stream of size bytes (negative if unknown) with
// open(ctx, 0), retried as Retry does, and returns it as a reader that
// resumes after a transient failure (a reset, a stall, fewer than size
// bytes) by open(ctx, offset) at the offset reached, drawing on the same
// RetryAttempts. open returns the stream from offset on (for HTTP, a
// Range request; see SkipTo).
func OpenResuming(ctx context.Context, what string, size int64, open func(ctx context.Context, offset int64) (io.ReadCloser, error)) (io.ReadCloser, error) {
	rt := newRetrier(what)
	actx := rt.attemptContext(ctx)
	for {
		rc, err := open(actx, 0)
		if err == nil {
			return newResumingBody(actx, rt, size, rc, open, func(err error) error { return err }), nil
		}
		if !rt.again(ctx, err) {
			return nil, err
		}
	}
}

// resumingBody is content of a known size as a server sends it (see
// OpenResuming): a read that fails transiently is resumed where it
// stopped, by a new request. Resuming draws on the attempts of the
// operation that opened the body. It checks nothing about the content:
// callers verify it (VerifyReader).
type resumingBody struct {
	ctx    context.Context // carries retry (attemptContext)
	retry  *retrier
	size   int64 // negative if unknown
	reopen func(ctx context.Context, offset int64) (io.ReadCloser, error)
	fail   func(err error) error // names the server and operation

	rc    io.ReadCloser // nil after a failure, until reopened
	pos   int64         // where the reader of the body is
	rcPos int64         // where rc is
	err   error         // sticky, once retrying has given up
}

// newResumingBody wraps rc, content just opened for the operation that
// retry counts. The result can seek (for Range requests) if rc can.
func newResumingBody(ctx context.Context, retry *retrier, size int64, rc io.ReadCloser,
	reopen func(ctx context.Context, offset int64) (io.ReadCloser, error), fail func(error) error) io.ReadCloser {
	b := &resumingBody{ctx: ctx, retry: retry, size: size, reopen: reopen, fail: fail, rc: rc}
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
		if err == io.EOF && b.size >= 0 && b.pos < b.size {
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
		rc, err := b.reopen(b.ctx, b.pos)
		if err == nil {
			b.rc, b.rcPos = rc, b.pos
			return nil
		}
		err = b.fail(fmt.Errorf("resuming at byte %d: %w", b.pos, err))
		if !b.retry.again(b.ctx, err) {
			return err
		}
	}
}

// SkipTo moves rc, a stream just opened at its start, to offset: by
// seeking if it can (oras-go's blob bodies make a Range request), else by
// reading and discarding. On failure it closes rc.
func SkipTo(rc io.ReadCloser, offset int64) (io.ReadCloser, error) {
	if offset == 0 {
		return rc, nil
	}
	if s, ok := rc.(io.Seeker); ok {
		// A stream whose seek failed is still at its start.
		if _, err := s.Seek(offset, io.SeekStart); err == nil {
			return rc, nil
		}
	}
	n, err := io.CopyN(io.Discard, rc, offset)
	if err == io.EOF {
		err = fmt.Errorf("content ends after %d bytes: %w", n, io.ErrUnexpectedEOF)
	}
	if err != nil {
		rc.Close()
		return nil, err
	}
	return rc, nil
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
		offset += b.size
	default:
		return 0, errors.New("seek: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("seek: negative position")
	}
	b.pos = offset
	return offset, nil
}
