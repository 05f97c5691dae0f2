package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Binary-cache files beyond narinfos and NARs (SPEC.md section 12): build
// logs, realisations (build trace entries), NAR listings and the
// debug-info index. Each is an artifact of its own, tagged by its key, so
// that store-path and closure digests do not change.
const (
	// ArtifactTypeLog marks the artifact of one build log, tagged
	// LogTag(drvPath).
	ArtifactTypeLog = "application/vnd.nixoci.log.v1"
	// ArtifactTypeRealisation marks the artifact of one realisation (a
	// build trace entry: derivation output -> output path), tagged
	// RealisationTag of each key it is known by.
	ArtifactTypeRealisation = "application/vnd.nixoci.realisation.v1"
	// ArtifactTypeListing marks the artifact of one NAR listing, tagged
	// ListingTag(hash part).
	ArtifactTypeListing = "application/vnd.nixoci.listing.v1"
	// ArtifactTypeDebugInfo marks the artifact of one debug-info index
	// entry, tagged DebugInfoTag(build id).
	ArtifactTypeDebugInfo = "application/vnd.nixoci.debuginfo.v1"

	// ArtifactTypeClosureFiles marks a version 2 closure index that also
	// lists file artifacts of its paths (SPEC.md section 12.6). A closure
	// without any keeps ArtifactTypeClosureV2, and its digest.
	ArtifactTypeClosureFiles = "application/vnd.nixoci.closure-files.v2"
)

// IsFileArtifactType reports whether t is the artifact type of a build
// log, realisation, NAR listing or debug-info entry.
func IsFileArtifactType(t string) bool {
	switch t {
	case ArtifactTypeLog, ArtifactTypeRealisation, ArtifactTypeListing, ArtifactTypeDebugInfo:
		return true
	}
	return false
}

// IsClosureIndexType reports whether t is the artifact type of a version
// 2 closure index, with or without files.
func IsClosureIndexType(t string) bool {
	return t == ArtifactTypeClosureV2 || t == ArtifactTypeClosureFiles
}

// MaxLogSize bounds a build log a writer stores or a reader accepts,
// decoded: 256 MiB.
const MaxLogSize = 256 << 20

// Media types of the files those artifacts hold, one layer each.
const (
	// MediaTypeLog is a build log as Nix prints it (bytes, usually UTF-8).
	MediaTypeLog = "application/vnd.nixoci.log.v1"
	// MediaTypeRealisation is a realisation in the layout of Nix before
	// 2.35 (`realisations/<id>.doi`), kept as uploaded.
	MediaTypeRealisation = "application/vnd.nixoci.realisation.v1+json"
	// MediaTypeBuildTrace is a build trace value in the layout of Nix 2.35
	// (`build-trace-v2/<drv>/<output>.doi`).
	MediaTypeBuildTrace = "application/vnd.nixoci.build-trace.v2+json"
	// MediaTypeListing is a NAR listing (`<hash>.ls`).
	MediaTypeListing = "application/vnd.nixoci.nar-listing.v1+json"
	// MediaTypeDebugInfo is a debug-info index entry (`debuginfo/<id>`).
	MediaTypeDebugInfo = "application/vnd.nixoci.debuginfo.v1+json"
)

// Annotations of those artifacts (besides AnnotationVersion and, where
// the output path or listed path is known, AnnotationStorePath).
const (
	// AnnotationDrvPath: the derivation, absolute store path (logs;
	// realisations whose derivation path is known).
	AnnotationDrvPath = AnnotationPrefix + "drv-path"
	// AnnotationDrvHash: a realisation's derivation hash modulo,
	// "sha256:<hex>", when known.
	AnnotationDrvHash = AnnotationPrefix + "drv-hash"
	// AnnotationOutput: a realisation's output name.
	AnnotationOutput = AnnotationPrefix + "output"
	// AnnotationBuildID: a debug-info entry's build id.
	AnnotationBuildID = AnnotationPrefix + "build-id"
	// AnnotationArchive: a debug-info entry's NAR, as the digest of the
	// compressed NAR blob (sha256:<hex>).
	AnnotationArchive = AnnotationPrefix + "archive"
	// AnnotationGenerated: "true" on a listing made by nixoci from the
	// NAR rather than uploaded.
	AnnotationGenerated = AnnotationPrefix + "generated"
)

// LogTag is the tag of the build log of the derivation drvPath: its hash
// part and ".log", e.g. "f6cc….log".
func LogTag(drvPath string) string { return PathTag(drvPath) + ".log" }

// ListingTag is the tag of the NAR listing of the store path whose hash
// part is hash: "<hash>.ls".
func ListingTag(hash string) string { return hash + ".ls" }

// DebugInfoTag is the tag of the debug-info entry of a build id (40 hex
// digits): "debuginfo.<id>".
func DebugInfoTag(buildID string) string { return "debuginfo." + buildID }

// RealisationTag is the tag of a realisation known by key, the key as
// Nix writes it in the realisation's file name: "sha256:<hex>!<output>"
// (before 2.35) or "<drv base name>^<output>" (2.35). Keys hold
// characters no tag may, so the tag is "realisation." and the hex
// sha256 of the key; the key itself is in the annotations.
func RealisationTag(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "realisation." + hex.EncodeToString(sum[:])
}

// IsFileTag reports whether tag has the form of the tags above (readers
// listing closures skip such tags).
func IsFileTag(tag string) bool {
	if h, ok := strings.CutSuffix(tag, ".log"); ok {
		return IsHashPart(h)
	}
	if h, ok := strings.CutSuffix(tag, ".ls"); ok {
		return IsHashPart(h)
	}
	if id, ok := strings.CutPrefix(tag, "debuginfo."); ok {
		return isHex(id, 40)
	}
	if h, ok := strings.CutPrefix(tag, "realisation."); ok {
		return isHex(h, 64)
	}
	return false
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !('0' <= s[i] && s[i] <= '9' || 'a' <= s[i] && s[i] <= 'f') {
			return false
		}
	}
	return true
}
