package substituter

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/internal/serving"
	"github.com/nixoci/nixoci/nar"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// UploadOptions enable `nix copy --to http://…` into the first backend.
type UploadOptions struct {
	// Credentials are the users who may upload; clients authenticate with
	// HTTP Basic (Nix reads them from its netrc-file). Must not be empty.
	Credentials *Credentials
	// TempDir holds NARs while they are received; default os.TempDir().
	TempDir string
	// MaxNARSize bounds one uploaded NAR file; default 64 GiB.
	MaxNARSize int64
	// MaxLogSize bounds one uploaded build log, decoded; default
	// DefaultMaxLogSize.
	MaxLogSize int64
}

// uploader turns PUTs into artifact writes.
type uploader struct {
	s    *Server
	opts UploadOptions
	// received maps FileHash (hex) of NARs received to what they hold,
	// so the narinfo PUT that follows can be checked without reading the
	// NAR again.
	received *serving.LRU[receivedNAR]
}

type receivedNAR struct {
	narHash  string
	narSize  uint64
	fileSize int64
	comp     spec.Compression
}

func newUploader(s *Server, opts UploadOptions) (*uploader, error) {
	if opts.Credentials == nil || opts.Credentials.users() == 0 {
		return nil, ErrNoCredentials
	}
	if opts.MaxNARSize <= 0 {
		opts.MaxNARSize = 64 << 30
	}
	if opts.MaxLogSize <= 0 {
		opts.MaxLogSize = DefaultMaxLogSize
	}
	if err := s.backends.Metrics().Register(opts.Credentials.collector()); err != nil {
		return nil, fmt.Errorf("substituter: %w", err)
	}
	return &uploader{s: s, opts: opts, received: serving.NewLRU[receivedNAR](100000)}, nil
}

// admit lets an upload request through: uploads enabled and the client's
// credentials good. It answers the request itself otherwise.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) (*uploader, bool) {
	u := s.upload
	if u == nil {
		s.countUpload("any", "disabled")
		http.Error(w, "uploads are disabled on this server (start it with --upload)", http.StatusForbidden)
		return nil, false
	}
	if !s.authorize(w, r) {
		return nil, false
	}
	return u, true
}

func (s *Server) servePut(w http.ResponseWriter, r *http.Request) {
	u, ok := s.admit(w, r)
	if !ok {
		return
	}
	file := r.PathValue("file")
	var kind string
	var err error
	var status int
	switch {
	case strings.HasPrefix(r.URL.Path, "/nar/"):
		kind = "nar"
		status, err = u.putNAR(r, file)
	case file == "nix-cache-info":
		kind = "nix-cache-info"
		_, err = io.Copy(io.Discard, io.LimitReader(r.Body, 64<<10))
		status = http.StatusNoContent
	case strings.HasSuffix(file, ".narinfo"):
		kind = "narinfo"
		if hash, ok := narinfoHash(file); ok {
			status, err = u.putNarInfo(r, hash)
		} else {
			status, err = http.StatusBadRequest, fmt.Errorf("malformed narinfo name %q", file)
		}
	case strings.HasSuffix(file, ".ls"):
		kind = "listing"
		status, err = u.putListing(r, file)
	default:
		kind, status, err = "other", http.StatusNotFound, errors.New("only nix-cache-info, <hash>.narinfo, <hash>.ls, nar/<hash>.nar[.xz|.zst], log/<drv>, realisations/<id>.doi, build-trace-v2/<drv>/<output>.doi and debuginfo/<build id> can be uploaded")
	}
	s.answerUpload(w, r, kind, status, err)
}

// answerUpload answers an upload of kind that ended with status and err,
// counting and logging it.
func (s *Server) answerUpload(w http.ResponseWriter, r *http.Request, kind string, status int, err error) {
	if err != nil {
		s.countUpload(kind, "error")
		if status >= 500 {
			s.log.Error("upload failed", "path", r.URL.Path, "status", status, "err", err)
		} else {
			s.log.Warn("upload refused", "path", r.URL.Path, "status", status, "err", err)
		}
		http.Error(w, err.Error(), status)
		return
	}
	s.countUpload(kind, "ok")
	w.WriteHeader(status)
}

// putNAR receives a compressed NAR, checks that it hashes to its name and
// is a well-formed NAR, and stores it as a blob.
func (u *uploader) putNAR(r *http.Request, file string) (int, error) {
	narHash, ext, ok := narName(file)
	if !ok {
		return http.StatusBadRequest, fmt.Errorf("malformed NAR name %q", file)
	}
	comp := map[string]spec.Compression{"": spec.CompressionNone, ".xz": spec.CompressionXz, ".zst": spec.CompressionZstd}[ext]
	tmp, err := os.CreateTemp(u.opts.TempDir, "nixoci-upload-*")
	if err != nil {
		return http.StatusInternalServerError, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()

	fileHash := sha256.New()
	pr, pw := io.Pipe()
	type result struct {
		narHash string
		size    int64
		err     error
	}
	done := make(chan result, 1)
	go func() {
		h := sha256.New()
		n, err := nar.ValidateCompressed(pr, comp, h)
		io.Copy(io.Discard, pr) // keep the upload flowing after an error
		done <- result{"sha256:" + nixbase32.EncodeToString(h.Sum(nil)), n, err}
	}()
	body := http.MaxBytesReader(nil, r.Body, u.opts.MaxNARSize)
	size, err := io.Copy(io.MultiWriter(tmp, fileHash, pw), body)
	pw.CloseWithError(err)
	res := <-done
	if err != nil {
		return http.StatusBadRequest, fmt.Errorf("receiving %s: %w", file, err)
	}
	if got := nixbase32.EncodeToString(fileHash.Sum(nil)); got != narHash {
		return http.StatusBadRequest, fmt.Errorf("%s: content hashes to %s: %w", file, got, artifact.ErrHashMismatch)
	}
	if res.err != nil {
		return http.StatusBadRequest, fmt.Errorf("%s: %w", file, res.err)
	}
	desc := ocispec.Descriptor{MediaType: comp.MediaType(), Digest: digest.NewDigest(digest.SHA256, fileHash), Size: size}
	dst := u.s.backends.List()[0].Target
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return http.StatusInternalServerError, err
	}
	got := receivedNAR{res.narHash, uint64(res.size), size, comp}
	switch err := dst.Push(r.Context(), desc, tmp); {
	case errors.Is(err, errdef.ErrAlreadyExists):
		// What is stored under this digest is not necessarily what was
		// just received: it is read back, like a NAR stored before a
		// restart, so a corrupt blob is never committed to.
		var status int
		if got, status, err = u.checkStoredNAR(r.Context(), desc.Digest, comp); err != nil {
			return status, fmt.Errorf("%s: %w", file, err)
		}
	case err != nil:
		return statusOf(err), fmt.Errorf("storing %s: %w", file, err)
	}
	u.received.Put(desc.Digest.Encoded(), got, 24*time.Hour)
	return http.StatusCreated, nil
}

// putNarInfo commits an uploaded store path: its NAR must have been
// received (or be stored already and check out), then the narinfo blob,
// manifest and tag are written.
func (u *uploader) putNarInfo(r *http.Request, hash string) (int, error) {
	info, err := narinfo.Parse(http.MaxBytesReader(nil, r.Body, narinfo.MaxSize))
	if err != nil {
		return http.StatusBadRequest, err
	}
	if info.HashPart() != hash {
		return http.StatusBadRequest, fmt.Errorf("%s.narinfo describes %s", hash, info.StorePath)
	}
	comp, err := spec.ParseCompression(info.Compression)
	if err != nil || info.FileHash == "" {
		return http.StatusBadRequest, fmt.Errorf("%s: nixoci stores NARs compressed with zstd, xz or none, with a FileHash", info.StorePath)
	}
	fileHex, err := narinfo.HashDigestHex(info.FileHash)
	if err != nil {
		return http.StatusBadRequest, err
	}
	got, ok := u.received.Get(fileHex)
	if !ok {
		var status int
		got, status, err = u.checkStoredNAR(r.Context(), digest.NewDigestFromEncoded(digest.SHA256, fileHex), comp)
		if err != nil {
			return status, fmt.Errorf("%s: NAR %s: %w", info.StorePath, info.URL, err)
		}
	}
	if got.narHash != info.NarHash || got.narSize != info.NarSize || uint64(got.fileSize) != info.FileSize || got.comp != comp {
		return http.StatusBadRequest, fmt.Errorf("%s: narinfo says NarHash %s, NarSize %d, FileSize %d, %s; the uploaded NAR is %s, %d, %d, %s: %w",
			info.StorePath, info.NarHash, info.NarSize, info.FileSize, comp, got.narHash, got.narSize, got.fileSize, got.comp, artifact.ErrHashMismatch)
	}
	// Like a binary cache, accept a path only once its references are
	// here: a narinfo must never point at paths nobody can substitute.
	for _, ref := range info.References {
		refHash := spec.PathTag(ref)
		if refHash == hash {
			continue
		}
		e, err := u.s.lookup(r.Context(), refHash)
		if err != nil {
			return statusOf(err), fmt.Errorf("%s: checking reference %s: %w", info.StorePath, ref, err)
		}
		if e == nil {
			return http.StatusBadRequest, fmt.Errorf("%s: reference %s has not been uploaded", info.StorePath, ref)
		}
		if loc, ok := e.NAR.(upstreamNAR); ok {
			// Only an upstream has it (Nix skipped uploading it, told
			// it is here): pull it into the backend too.
			u.s.pull.prefetch(loc)
		}
	}
	// One artifact per store path (SPEC.md section 4): an upload never
	// replaces a stored path with different content; one of the same
	// NarHash keeps the stored NAR and signatures and may add its own.
	dst := u.s.backends.List()[0].Target
	existing, err := artifact.FetchPathByHash(r.Context(), dst, hash)
	stored := err == nil
	switch {
	case err == nil && existing.Info.NarHash != info.NarHash:
		return http.StatusConflict, fmt.Errorf("%s is stored with NarHash %s; refusing to replace it with %s", info.StorePath, existing.Info.NarHash, info.NarHash)
	case err == nil:
		merged := *existing.Info
		merged.Sigs = slices.Clone(existing.Info.Sigs)
		for _, sig := range info.Sigs {
			if !slices.Contains(merged.Sigs, sig) {
				merged.Sigs = append(merged.Sigs, sig)
			}
		}
		info = &merged
	case !isNotFound(err):
		return statusOf(err), err
	default:
		info.URL = spec.NarURL(strings.TrimPrefix(info.FileHash, "sha256:"), comp)
	}
	// Received through an authenticated upload: the server vouches for
	// it, and says so in the stored artifact (see trustPolicy).
	if err := u.s.resolver.policy.signInto(info); err != nil {
		return http.StatusInternalServerError, err
	}
	art := existing
	if !stored || !slices.Equal(info.Sigs, existing.Info.Sigs) {
		if art, err = artifact.StoreArtifact(r.Context(), dst, info, nil); err != nil {
			return statusOf(err), err
		}
	}
	// Also when nothing was added (another replica stored the path
	// meanwhile): a "not found" remembered from before would make Nix
	// refuse the paths referring to this one.
	u.s.narinfos.Remove(hash)
	// Recorded even if it was stored already: it may be reached by no
	// root (SPEC.md section 14.5).
	if !u.s.storedPath(StoredPath{Path: art, From: "upload"}) {
		return http.StatusServiceUnavailable, fmt.Errorf("%s is stored but cannot be recorded, so a garbage collection could delete it: the records of uploads fail to be written (see the server's log)", info.StorePath)
	}
	return http.StatusCreated, nil
}

// checkStoredNAR reads the NAR blob d already in the upload backend
// (uploaded before a restart, or by someone else) and describes it. A
// blob whose content does not match d is ErrHashMismatch, whatever it
// decodes to. The status answers an upload relying on the blob: 400 for
// one never uploaded or not a NAR, 5xx for a backend failure or a
// corrupt blob.
func (u *uploader) checkStoredNAR(ctx context.Context, d digest.Digest, comp spec.Compression) (receivedNAR, int, error) {
	dst := u.s.backends.List()[0].Target
	desc, err := dst.ResolveBlob(ctx, d)
	if errors.Is(err, errdef.ErrNotFound) {
		return receivedNAR{}, http.StatusBadRequest, fmt.Errorf("not uploaded: %w", err)
	} else if err != nil {
		return receivedNAR{}, statusOf(err), err
	}
	rc, err := dst.Fetch(ctx, desc)
	if err != nil {
		return receivedNAR{}, statusOf(err), err
	}
	vr, err := backend.VerifyReader(rc, desc)
	if err != nil {
		return receivedNAR{}, statusOf(err), err
	}
	defer vr.Close()
	h := sha256.New()
	n, err := nar.ValidateCompressed(vr, comp, h)
	// The digest is checked first, on the whole blob: a NAR error in a
	// corrupt blob is the corruption, not the client's fault.
	if _, verr := io.Copy(io.Discard, vr); errors.Is(verr, backend.ErrHashMismatch) {
		return receivedNAR{}, http.StatusBadGateway, fmt.Errorf("stored blob is corrupt; remove it from the backend so that an upload can store it again: %w", verr)
	} else if verr != nil {
		return receivedNAR{}, statusOf(verr), verr
	}
	if err != nil {
		return receivedNAR{}, http.StatusBadRequest, err
	}
	return receivedNAR{"sha256:" + nixbase32.EncodeToString(h.Sum(nil)), uint64(n), desc.Size, comp}, http.StatusOK, nil
}
