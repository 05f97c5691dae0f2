package substituter

import (
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
	start := time.Now()
	rc, err := b.Target.Fetch(r.Context(), loc.desc)
	s.metrics.observeBackend("fetch_blob", start, err)
	if err != nil {
		if isNotFound(err) {
			s.nars.remove(d.Encoded())
		}
		s.fail(w, r, "NAR "+d.String(), err)
		return
	}
	defer rc.Close()

	h := w.Header()
	h.Set("Content-Type", "application/x-nix-nar")
	h.Set("ETag", `"`+d.String()+`"`)
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	v := &verifier{r: rc, size: loc.desc.Size, h: sha256.New(), want: d}
	if rs, ok := rc.(io.ReadSeeker); ok {
		v.seeker = rs
		http.ServeContent(w, r, "", time.Time{}, v)
	} else {
		h.Set("Content-Length", strconv.FormatInt(loc.desc.Size, 10))
		io.Copy(w, v)
	}
	if v.corrupt {
		s.metrics.add("nixoci_corrupt_blobs_total", 1)
		s.nars.remove(d.Encoded())
		s.log.Error("corrupt blob served truncated", "digest", d.String(), "backend", b.Name, "err", errCorrupt)
	}
}

// verifier hashes a blob as it is read from start to end and, if the
// content does not match the digest, withholds the last read so the
// response ends short: the client sees a broken transfer, never a
// complete wrong body. Seeks (Range requests) turn verification off.
type verifier struct {
	r       io.Reader
	seeker  io.Seeker
	size    int64
	pos     int64
	h       hash.Hash
	want    digest.Digest
	off     bool // not reading the whole blob in order
	corrupt bool
}

func (v *verifier) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	if v.off {
		return n, err
	}
	v.h.Write(p[:n])
	v.pos += int64(n)
	if v.pos == v.size {
		if hex.EncodeToString(v.h.Sum(nil)) != v.want.Encoded() {
			v.corrupt = true
			return 0, fmt.Errorf("%s: %w", v.want, errCorrupt)
		}
	}
	return n, err
}

func (v *verifier) Seek(offset int64, whence int) (int64, error) {
	pos, err := v.seeker.Seek(offset, whence)
	// ServeContent seeks to the end and back to learn the size; only a
	// read that starts elsewhere than 0 disables verification.
	if err == nil && pos != 0 && whence != io.SeekEnd {
		v.off = true
	}
	if err == nil && pos == 0 {
		v.h.Reset()
		v.pos = 0
	}
	return pos, err
}
