package serving

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrCorrupt: a blob's bytes do not hash to its digest.
var ErrCorrupt = errors.New("blob content does not match its digest")

// blobReader serves a blob whose first bytes were already read (head),
// as an io.ReadSeeker of the size the descriptor records. Read in order
// from the start, it hashes what it returns and, if the content does not
// match the digest (different bytes, shorter, or longer), withholds the
// last read, so the response ends short: the client sees a broken
// transfer, never a complete wrong body. Seeking elsewhere (a Range
// request) turns verification off.
type blobReader struct {
	head      []byte
	src       io.Reader
	seeker    io.Seeker // nil if src cannot seek
	srcPos    int64     // position of src in the blob
	pos       int64     // position of the reader in the blob
	size      int64
	h         hash.Hash
	want      digest.Digest
	verifying bool
	verified  bool  // read whole from the start, and it matched
	corrupt   error // why the content did not match
}

func newBlobReader(src io.Reader, head []byte, desc ocispec.Descriptor) *blobReader {
	b := &blobReader{head: head, src: src, srcPos: int64(len(head)), size: desc.Size, h: sha256.New(), want: desc.Digest, verifying: true}
	if sk, ok := src.(io.Seeker); ok {
		b.seeker = sk
	}
	return b
}

func (b *blobReader) Read(p []byte) (int, error) {
	if b.pos >= b.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), b.size-b.pos)]
	var n int
	var err error
	if b.pos < int64(len(b.head)) {
		n = copy(p, b.head[b.pos:])
	} else {
		if b.srcPos != b.pos {
			if b.seeker == nil {
				return 0, errors.New("blob reader cannot seek")
			}
			if _, err := b.seeker.Seek(b.pos, io.SeekStart); err != nil {
				return 0, err
			}
			b.srcPos = b.pos
		}
		n, err = b.src.Read(p)
		b.srcPos += int64(n)
		if err == io.EOF && b.pos+int64(n) < b.size {
			err = b.fail("shorter than its recorded size")
		}
	}
	if b.verifying {
		b.h.Write(p[:n])
	}
	b.pos += int64(n)
	if b.verifying && b.pos == b.size {
		longer := int64(len(b.head)) > b.size
		if !longer && b.srcPos == b.size {
			var extra [1]byte
			k, _ := io.ReadFull(b.src, extra[:])
			longer = k > 0
		}
		if longer {
			return 0, b.fail("longer than its recorded size")
		}
		if hex.EncodeToString(b.h.Sum(nil)) != b.want.Encoded() {
			return 0, b.fail("content hash differs")
		}
		b.verified = true
	}
	if err == io.EOF && b.pos < b.size {
		err = nil
	}
	return n, err
}

func (b *blobReader) fail(why string) error {
	b.corrupt = fmt.Errorf("%s: %s: %w", b.want, why, ErrCorrupt)
	return b.corrupt
}

func (b *blobReader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = b.pos + offset
	case io.SeekEnd:
		abs = b.size + offset
	}
	if abs < 0 {
		return 0, errors.New("negative position")
	}
	if whence == io.SeekEnd && offset == 0 {
		return abs, nil // ServeContent asking for the size; nothing moves
	}
	if abs != b.pos {
		b.verifying = abs == 0
		b.h.Reset()
	}
	b.pos = abs
	return abs, nil
}
