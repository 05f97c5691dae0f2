package substituter

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"path"

	"github.com/opencontainers/go-digest"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/realisation"
	"github.com/nixoci/nixoci/spec"
)

// DefaultMaxLogSize bounds one uploaded build log (decoded): 256 MiB.
const DefaultMaxLogSize = spec.MaxLogSize

// serveLog answers `GET /log/<drv base name>` (what `nix log --store
// http://…` asks) from the log artifact tagged LogTag.
func (s *Server) serveLog(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	if err := realisation.CheckDrvName(name); err != nil {
		http.Error(w, "malformed log name: want log/<derivation base name>: "+err.Error(), http.StatusBadRequest)
		return
	}
	e, err := s.findFile(r.Context(), spec.LogTag(name), spec.ArtifactTypeLog)
	if err != nil {
		s.fail(w, r, "log "+name, err)
		return
	}
	f, ok := logFile(e, name)
	if !ok {
		http.Error(w, "no build log of "+name, http.StatusNotFound)
		return
	}
	s.sendFile(w, r, e, f, "text/plain; charset=utf-8")
}

// logFile is e's log if e is the log of the derivation named name.
func logFile(e *fileEntry, name string) (artifact.File, bool) {
	if e == nil || path.Base(e.fa.Annotations[spec.AnnotationDrvPath]) != name {
		return artifact.File{}, false
	}
	return e.fa.File(spec.MediaTypeLog)
}

// putLog stores `PUT /log/<drv base name>` (`nix store copy-log --to`),
// replacing any log stored for that derivation.
func (u *uploader) putLog(r *http.Request) (int, error) {
	name := r.PathValue("file")
	if err := realisation.CheckDrvName(name); err != nil {
		return http.StatusBadRequest, fmt.Errorf("log/%s: %w", name, err)
	}
	f, size, cleanup, status, err := u.spool(r, u.opts.MaxLogSize)
	if err != nil {
		return status, fmt.Errorf("log/%s: %w", name, err)
	}
	defer cleanup()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return http.StatusInternalServerError, err
	}
	fa := artifact.NewLogArtifact(path.Join(u.s.opts.StoreDir, name), artifact.File{Title: "log/" + name, MediaType: spec.MediaTypeLog,
		Digest: digest.NewDigest(digest.SHA256, h), Size: size, Open: func() (io.Reader, error) { return io.NewSectionReader(f, 0, size), nil }})
	return u.storeFile(r.Context(), fa, spec.LogTag(name))
}
