package substituter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/opencontainers/go-digest"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/internal/serving"
	"github.com/nixoci/nixoci/spec"
)

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
	if s.pull != nil {
		if up, ok := s.pull.nars.Get(d.String()); ok {
			s.pull.serveNAR(w, r, up, ext)
			return
		}
	}
	loc, found, err := s.backends.LocateBlob(r.Context(), d)
	if err != nil {
		s.fail(w, r, "NAR "+d.String(), err)
		return
	}
	if !found && s.pull != nil {
		s.pull.serveUnindexedNAR(w, r, d, r.PathValue("file"))
		return
	}
	if !found {
		http.Error(w, "no such NAR", http.StatusNotFound)
		return
	}
	if c, ok := spec.CompressionOfMediaType(loc.Desc.MediaType); ok && c.Ext() != ".nar"+ext {
		http.Error(w, "no such NAR with this compression", http.StatusNotFound)
		return
	}
	b := s.backends.List()[loc.Backend]
	if s.opts.RedirectBlobs && s.redirect(w, r, b, loc) {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/x-nix-nar")
	h.Set("ETag", `"`+d.String()+`"`)
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	if r.Method == http.MethodHead {
		h.Set("Content-Length", strconv.FormatInt(loc.Desc.Size, 10))
		return
	}
	var rc io.ReadCloser
	if bc := s.opts.BlobCache; bc != nil {
		if f := bc.Open(r.Context(), d); f != nil {
			rc = f
		}
	}
	if rc == nil {
		if rc, err = s.backends.OpenBlob(r.Context(), loc); err != nil {
			s.fail(w, r, "NAR "+d.String(), err)
			return
		}
	}
	defer rc.Close()
	if s.ahead != nil && r.Method == http.MethodGet {
		// Once the NAR is open, so that its backend's answer is
		// measured before deciding whether to fetch NARs ahead.
		s.ahead.nar(r)
	}
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
		if _, known := spec.CompressionOfMediaType(loc.Desc.MediaType); known {
			// Recorded as such a NAR, yet it does not start like one.
			s.backends.CountCorrupt()
			s.log.Error("corrupt blob refused", "digest", d.String(), "backend", b.Name, "err", serving.ErrCorrupt)
			http.Error(w, "NAR "+d.String()+" is corrupt in the backend", http.StatusBadGateway)
			return
		}
		http.Error(w, "no such NAR with this compression", http.StatusNotFound)
		return
	}
	if err := s.backends.ServeBlob(w, r, loc, rc, head); err != nil {
		s.log.Error("corrupt blob served truncated", "digest", d.String(), "backend", b.Name, "err", err)
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

// redirect answers the request for the NAR at loc with the registry's
// redirect to its storage, if the backend is a registry that redirects;
// it reports whether it answered. A failure to ask is logged and the NAR
// is then served as usual.
func (s *Server) redirect(w http.ResponseWriter, r *http.Request, b serving.Backend, loc serving.BlobLocation) bool {
	rd, ok := b.Target.(backend.BlobRedirector)
	if !ok {
		return false
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.backends.Timeout())
	defer cancel()
	location, redirected, err := rd.BlobRedirect(ctx, loc.Desc)
	if err != nil {
		s.log.Warn("cannot ask the registry where the NAR is; serving it", "digest", loc.Desc.Digest.String(), "backend", b.Name, "err", err)
		return false
	}
	if !redirected {
		return false
	}
	s.metrics.redirects.Inc()
	http.Redirect(w, r, location, http.StatusTemporaryRedirect)
	return true
}

// openNAR reads the NAR of pe, checked against its digest as it is read:
// from its backend, or pulled from its upstream.
func (s *Server) openNAR(ctx context.Context, pe *pathEntry) (io.ReadCloser, error) {
	switch loc := pe.NAR.(type) {
	case backendNAR:
		rc, err := s.backends.OpenBlob(ctx, serving.BlobLocation(loc))
		if err != nil {
			return nil, err
		}
		return backend.VerifyReader(rc, loc.Desc)
	case upstreamNAR:
		return s.pull.openVerified(ctx, loc)
	}
	return nil, fmt.Errorf("%s: no NAR location", pe.Artifact.Info.StorePath)
}
