package substituter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/opencontainers/go-digest"

	"github.com/nixoci/nixoci/spec"
)

// errCorrupt: a blob's bytes do not hash to its digest.
var errCorrupt = errors.New("blob content does not match its digest")

func (s *Server) serveNAR(w http.ResponseWriter, r *http.Request) {
	hash, ext, ok := narName(r.PathValue("file"))
	if !ok {
		http.Error(w, "malformed NAR name: want nar/<52 nix-base32 chars>.nar[.xz|.zst]", http.StatusBadRequest)
		return
	}
	raw, err := nixbase32.DecodeString(hash)
	if err != nil || len(raw) != sha256.Size {
		http.Error(w, "malformed NAR hash", http.StatusBadRequest)
		return
	}
	d := digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(raw))
	loc, found, err := s.locateNAR(r.Context(), d)
	if err != nil {
		s.fail(w, r, "NAR "+d.String(), err)
		return
	}
	if !found {
		http.Error(w, "no such NAR", http.StatusNotFound)
		return
	}
	if c, ok := spec.CompressionOfMediaType(loc.desc.MediaType); ok && c.Ext() != ".nar"+ext {
		http.Error(w, "no such NAR with this compression", http.StatusNotFound)
		return
	}
	b := s.opts.Backends[loc.backend]
	h := w.Header()
	h.Set("Content-Type", "application/x-nix-nar")
	h.Set("ETag", `"`+d.String()+`"`)
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	if r.Method == http.MethodHead {
		h.Set("Content-Length", strconv.FormatInt(loc.desc.Size, 10))
		return
	}
	rc, err := s.fetchBlob(r.Context(), loc)
	if err != nil {
		s.fail(w, r, "NAR "+d.String(), err)
		return
	}
	defer rc.Close()
	// The first bytes say what the blob is: only a NAR in the compression
	// the name asks for is served (a blob found by digest alone may be
	// anything, e.g. a manifest).
	head := make([]byte, 16)
	n, err := io.ReadFull(rc, head)
	head = head[:n]
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		s.fail(w, r, "NAR "+d.String(), err)
		return
	}
	if !hasMagic(head, ext) {
		if _, known := spec.CompressionOfMediaType(loc.desc.MediaType); known {
			// Recorded as such a NAR, yet it does not start like one.
			s.metrics.add("nixoci_corrupt_blobs_total", 1)
			s.log.Error("corrupt blob refused", "digest", d.String(), "backend", b.Name, "err", errCorrupt)
			http.Error(w, "NAR "+d.String()+" is corrupt in the backend", http.StatusBadGateway)
			return
		}
		http.Error(w, "no such NAR with this compression", http.StatusNotFound)
		return
	}
	s.serveBlob(w, r, b.Name, loc, rc, head)
}

// fetchBlob opens the blob at loc, timed; a blob gone from where it was
// found is forgotten there, so the next request looks for it again.
func (s *Server) fetchBlob(ctx context.Context, loc narLocation) (io.ReadCloser, error) {
	start := time.Now()
	rc, err := s.opts.Backends[loc.backend].Target.Fetch(ctx, loc.desc)
	s.metrics.observeBackend("fetch_blob", start, err)
	if isNotFound(err) {
		s.nars.remove(loc.desc.Digest.Encoded())
	}
	return rc, err
}

// serveBlob streams a blob (whose first bytes, head, were already read
// from rc) with Range support, verifying it against its digest.
//
// A blob file of an image layout that was verified whole before and has
// not changed since (same fileID) is served straight from the file, which
// lets the kernel send it (sendfile) without copying it through the
// server.
func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, backend string, loc narLocation, rc io.Reader, head []byte) {
	key := loc.desc.Digest.String()
	f, id, isFile := fileIdentity(rc)
	isFile = isFile && id.size == loc.desc.Size // else: not the blob recorded
	if isFile {
		if known, ok := s.verified.get(key); ok && known == id {
			s.metrics.add("nixoci_blob_sendfile_total", 1)
			http.ServeContent(w, r, "", time.Time{}, f)
			return
		}
	}
	br := &blobReader{head: head, src: rc, srcPos: int64(len(head)), size: loc.desc.Size, h: sha256.New(), want: loc.desc.Digest, verifying: true}
	if sk, ok := rc.(io.Seeker); ok {
		br.seeker = sk
	} else {
		r.Header.Del("Range") // cannot seek: always the whole blob
	}
	http.ServeContent(w, r, "", time.Time{}, br)
	if br.corrupt {
		s.metrics.add("nixoci_corrupt_blobs_total", 1)
		s.log.Error("corrupt blob served truncated", "digest", key, "backend", backend, "err", errCorrupt)
		return
	}
	if br.verified && isFile {
		if _, after, ok := fileIdentity(rc); ok && after == id {
			s.verified.put(key, id, verifiedTTL)
		}
	}
}

// Magic numbers of what nar/ serves.
var (
	xzMagic   = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
	narMagic  = []byte("\x0d\x00\x00\x00\x00\x00\x00\x00nix-archive-1")
)

func hasMagic(head []byte, ext string) bool {
	switch ext {
	case ".xz":
		return bytes.HasPrefix(head, xzMagic)
	case ".zst":
		return bytes.HasPrefix(head, zstdMagic)
	default:
		return bytes.HasPrefix(narMagic, head[:min(len(head), len(narMagic))]) && len(head) >= 8
	}
}

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
	verified  bool // read whole from the start, and it matched
	corrupt   bool
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
	b.corrupt = true
	return fmt.Errorf("%s: %s: %w", b.want, why, errCorrupt)
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
