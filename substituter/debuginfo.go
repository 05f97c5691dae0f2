package substituter

import (
	"fmt"
	"net/http"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/spec"
)

// serveDebugInfo answers `GET /debuginfo/<build id>[.debug]`: either
// name finds the entry of the build id.
func (s *Server) serveDebugInfo(w http.ResponseWriter, r *http.Request) {
	m := artifact.DebugInfoName.FindStringSubmatch(r.PathValue("file"))
	if m == nil {
		http.Error(w, "malformed debug-info name: want debuginfo/<40 hex digits>[.debug]", http.StatusBadRequest)
		return
	}
	e, err := s.findFile(r.Context(), spec.DebugInfoTag(m[1]), spec.ArtifactTypeDebugInfo)
	if err != nil {
		s.fail(w, r, "debuginfo "+m[1], err)
		return
	}
	var f artifact.File
	ok := e != nil && e.fa.Annotations[spec.AnnotationBuildID] == m[1]
	if ok {
		f, ok = e.fa.File(spec.MediaTypeDebugInfo)
	}
	if !ok {
		http.Error(w, "no debug info for build id "+m[1], http.StatusNotFound)
		return
	}
	s.sendFile(w, r, e, f, "application/json")
}

// putDebugInfo stores `PUT /debuginfo/<build id>[.debug]`
// (index-debug-info=true): {"archive": "../nar/<FileHash>.nar.<ext>",
// "member": "lib/debug/.build-id/<2>/<38>.debug"}, the member's path
// being the build id's. Nix sends it before the NAR it points at, so the
// NAR is not required to be here yet.
func (u *uploader) putDebugInfo(r *http.Request) (int, error) {
	name := r.PathValue("file")
	m := artifact.DebugInfoName.FindStringSubmatch(name)
	if m == nil {
		return http.StatusBadRequest, fmt.Errorf("malformed debug-info name %q: want <40 hex digits>[.debug]", name)
	}
	data, status, err := readUploadBody(r, artifact.MaxDebugInfoSize)
	if err != nil {
		return status, err
	}
	fa, err := artifact.NewDebugInfoArtifact(name, data)
	if err != nil {
		return http.StatusBadRequest, err
	}
	return u.storeFile(r.Context(), fa, spec.DebugInfoTag(m[1]))
}
