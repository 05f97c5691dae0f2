package source

import (
	"context"
	"fmt"
	"hash"
	"io"

	"github.com/nixoci/nixoci/narinfo"
)

// checkNAR compares a NAR's hash and size with what info records.
func checkNAR(info *narinfo.NarInfo, h hash.Hash, n int64) error {
	got, err := narinfo.HashFromDigest(h.Sum(nil))
	if err != nil {
		return err
	}
	if got != info.NarHash || uint64(n) != info.NarSize {
		return fmt.Errorf("%s: NAR is %s (%d bytes) but its metadata says %s (%d bytes): %w",
			info.StorePath, got, n, info.NarHash, info.NarSize, ErrHashMismatch)
	}
	return nil
}

// ctxReader stops a long copy when ctx is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// boundedWriter passes at most left bytes to w and fails on more: a NAR
// that decompresses past the NarSize its narinfo claims is stopped there
// rather than read to its end.
type boundedWriter struct {
	w    io.Writer
	left int64
}

func (b *boundedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > b.left {
		return 0, fmt.Errorf("NAR longer than its NarSize: %w", ErrHashMismatch)
	}
	b.left -= int64(len(p))
	return b.w.Write(p)
}
