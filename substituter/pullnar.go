package substituter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/internal/serving"
	"github.com/nixoci/nixoci/source"
	"github.com/nixoci/nixoci/spec"
)

// serveNAR answers a request for the NAR at loc: from the blob cache as
// it is pulled (one pull for all requests), or, if it cannot be cached,
// streamed from the upstream (verified against its digest as it goes,
// not stored).
func (p *puller) serveNAR(w http.ResponseWriter, r *http.Request, loc upstreamNAR, ext string) {
	if c, ok := spec.CompressionOfMediaType(loc.desc.MediaType); !ok || c.Ext() != ".nar"+ext {
		http.Error(w, "no such NAR with this compression", http.StatusNotFound)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/x-nix-nar")
	h.Set("ETag", `"`+loc.desc.Digest.String()+`"`)
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	if r.Method == http.MethodHead {
		h.Set("Content-Length", strconv.FormatInt(loc.desc.Size, 10))
		return
	}
	if p.s.ahead != nil {
		p.s.ahead.nar(r)
	}
	what := "NAR " + loc.desc.Digest.String() + " of " + loc.info.StorePath + " from upstream " + loc.up.Name
	rc, err := p.open(r.Context(), loc)
	if err != nil {
		p.s.fail(w, r, what, err)
		return
	}
	defer rc.Close()
	if err := p.s.backends.ServeBlob(w, r, serving.BlobLocation{Desc: loc.desc}, rc, nil); err != nil {
		p.s.log.Error("NAR from upstream served truncated", "upstream", loc.up.Name, "path", loc.info.StorePath, "err", err)
	}
}

// open reads the NAR at loc: from the blob cache as it is pulled, or
// straight from the upstream if it cannot be cached (the caller verifies
// the digest as it reads).
func (p *puller) open(ctx context.Context, loc upstreamNAR) (io.ReadCloser, error) {
	rc, err := p.bc.Join(ctx, p.fill(loc))
	if errors.Is(err, serving.ErrNoRoom) {
		return loc.up.Cache.OpenNAR(ctx, loc.fetchInfo())
	}
	return rc, err
}

// openVerified is open, checked against the NAR's digest as it is read.
func (p *puller) openVerified(ctx context.Context, loc upstreamNAR) (io.ReadCloser, error) {
	rc, err := p.open(ctx, loc)
	if err != nil {
		return nil, err
	}
	return backend.VerifyReader(rc, loc.desc)
}

// serveUnindexedNAR answers a request for a NAR no backend holds and no
// narinfo found since serve started names: Nix keeps narinfos for a long
// time (narinfo-cache-positive-ttl, 30 days) and asks for their NARs
// directly, after serve restarted, say. Each upstream is asked for the
// file at the same name (nar/<FileHash>.<ext>, where `nix copy --to` and
// cache.nixos.org keep it) in order; the first that has it streams,
// checked against the digest its name is, its last bytes withheld until
// the whole verified, so a wrong file is never received whole. It is not
// stored: no narinfo says which path it is. None having it is a 404, any
// failing a 5xx.
func (p *puller) serveUnindexedNAR(w http.ResponseWriter, r *http.Request, d digest.Digest, name string) {
	var errs []error
	for _, up := range p.opts.Upstreams {
		rc, err := up.Cache.OpenFile(r.Context(), "nar/"+name)
		if errors.Is(err, source.ErrNotInCache) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		defer rc.Close()
		w.Header().Set("Content-Type", "application/x-nix-nar")
		w.Header().Set("ETag", `"`+d.String()+`"`)
		if r.Method == http.MethodHead {
			return
		}
		hw := &withholding{w: w, h: sha256.New()}
		_, err = io.Copy(hw, io.LimitReader(rc, p.opts.MaxNARSize+1))
		if err == nil {
			err = hw.finish(d)
		}
		if err != nil {
			p.s.log.Error("NAR from upstream cut short", "upstream", up.Name, "nar", name, "err", err)
			panic(http.ErrAbortHandler) // the client sees a broken transfer
		}
		return
	}
	if len(errs) > 0 {
		p.s.fail(w, r, "NAR "+d.String(), errors.Join(errs...))
		return
	}
	http.Error(w, "no such NAR", http.StatusNotFound)
}

// withholding passes what is written on to w but its last bytes, which
// finish writes only if everything hashed to the digest asked for.
type withholding struct {
	w    io.Writer
	h    hash.Hash
	last []byte
	n    int64
}

const withheld = 64 << 10

func (x *withholding) Write(p []byte) (int, error) {
	x.h.Write(p)
	x.n += int64(len(p))
	x.last = append(x.last, p...)
	if over := len(x.last) - withheld; over > 0 {
		if _, err := x.w.Write(x.last[:over]); err != nil {
			return 0, err
		}
		x.last = append(x.last[:0], x.last[over:]...)
	}
	return len(p), nil
}

// finish writes the bytes withheld if the content hashes to d.
func (x *withholding) finish(d digest.Digest) error {
	if got := hex.EncodeToString(x.h.Sum(nil)); got != d.Encoded() {
		return fmt.Errorf("%d bytes hashing to sha256:%s, not %s", x.n, got, d)
	}
	_, err := x.w.Write(x.last)
	return err
}
