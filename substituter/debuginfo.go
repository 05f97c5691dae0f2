package substituter

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/spec"
)

// maxDebugInfoSize bounds a debug-info entry; Nix writes about 150 bytes.
const maxDebugInfoSize = 4 << 10

// buildIDName matches the name of a debug-info entry: a 40-hex-digit
// build id, with ".debug" after it as Nix's index-debug-info writes it
// (BinaryCacheStore::addToStoreCommon joins the directory and file names
// of lib/debug/.build-id/<2>/<38>.debug, suffix included).
var buildIDName = regexp.MustCompile(`^([0-9a-f]{40})(\.debug)?$`)

// debugInfoArchive matches an entry's archive: its NAR, relative to
// debuginfo/.
var debugInfoArchive = regexp.MustCompile(`^\.\./nar/([0-9a-df-np-sv-z]{52})\.nar(\.xz|\.zst|\.bz2|\.br)?$`)

// serveDebugInfo answers `GET /debuginfo/<build id>[.debug]`: either
// name finds the entry of the build id.
func (s *Server) serveDebugInfo(w http.ResponseWriter, r *http.Request) {
	m := buildIDName.FindStringSubmatch(r.PathValue("file"))
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
	m := buildIDName.FindStringSubmatch(name)
	if m == nil {
		return http.StatusBadRequest, fmt.Errorf("malformed debug-info name %q: want <40 hex digits>[.debug]", name)
	}
	id := m[1]
	data, status, err := readUploadBody(r, maxDebugInfoSize)
	if err != nil {
		return status, err
	}
	var entry struct {
		Archive *string `json:"archive"`
		Member  *string `json:"member"`
	}
	if err := json.Unmarshal(data, &entry); err != nil || entry.Archive == nil || entry.Member == nil {
		return http.StatusBadRequest, fmt.Errorf("debuginfo/%s: not a JSON object with archive and member", name)
	}
	am := debugInfoArchive.FindStringSubmatch(*entry.Archive)
	if am == nil {
		return http.StatusBadRequest, fmt.Errorf("debuginfo/%s: archive %q is not ../nar/<52 nix-base32 chars>.nar[.xz|.zst|.bz2|.br]", name, *entry.Archive)
	}
	if want := "lib/debug/.build-id/" + id[:2] + "/" + id[2:] + ".debug"; *entry.Member != want {
		return http.StatusBadRequest, fmt.Errorf("debuginfo/%s: member %q, want %q", name, *entry.Member, want)
	}
	raw, err := nixbase32.DecodeString(am[1])
	if err != nil {
		return http.StatusBadRequest, fmt.Errorf("debuginfo/%s: archive hash: %w", name, err)
	}
	fa := &artifact.FileArtifact{
		Type: spec.ArtifactTypeDebugInfo,
		Annotations: map[string]string{
			spec.AnnotationBuildID: id,
			spec.AnnotationArchive: "sha256:" + hex.EncodeToString(raw),
		},
		Files: []artifact.File{artifact.BytesFile("debuginfo/"+name, spec.MediaTypeDebugInfo, data)},
	}
	return u.storeFile(r.Context(), fa, spec.DebugInfoTag(id))
}
