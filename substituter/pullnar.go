package substituter

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"

	"github.com/opencontainers/go-digest"

	"github.com/nixoci/nixoci/source"
)

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
