package artifact

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixoci/nixoci/nar"
	"github.com/nixoci/nixoci/spec"
)

// Constructors of the file artifacts (SPEC.md section 12) from files as
// a binary cache holds them, each checked as serve checks an upload:
// shared by serve's uploads and by pushes from binary caches.

// MaxDebugInfoSize bounds a debug-info entry; Nix writes about 150 bytes.
const MaxDebugInfoSize = 4 << 10

// DebugInfoName matches the name of a debug-info entry: a 40-hex-digit
// build id, with ".debug" after it as Nix's index-debug-info writes it
// (BinaryCacheStore::addToStoreCommon joins the directory and file names
// of lib/debug/.build-id/<2>/<38>.debug, suffix included).
var DebugInfoName = regexp.MustCompile(`^([0-9a-f]{40})(\.debug)?$`)

// debugInfoArchive matches an entry's archive: its NAR, relative to
// debuginfo/.
var debugInfoArchive = regexp.MustCompile(`^\.\./nar/([0-9a-df-np-sv-z]{52})\.nar(\.xz|\.zst|\.bz2|\.br)?$`)

// NewDebugInfoArtifact checks debuginfo/<name> ({"archive":
// "../nar/<FileHash>.nar.<ext>", "member":
// "lib/debug/.build-id/<2>/<38>.debug"}, the member's path being the
// build id's) and returns its artifact, annotated with the build id and
// the archive as the NAR blob's digest. Errors wrap ErrNotArtifact.
func NewDebugInfoArtifact(name string, data []byte) (*FileArtifact, error) {
	m := DebugInfoName.FindStringSubmatch(name)
	if m == nil {
		return nil, fmt.Errorf("malformed debug-info name %q: want <40 hex digits>[.debug]: %w", name, ErrNotArtifact)
	}
	id := m[1]
	if len(data) > MaxDebugInfoSize {
		return nil, fmt.Errorf("debuginfo/%s: %d bytes, more than %d: %w", name, len(data), MaxDebugInfoSize, ErrNotArtifact)
	}
	var entry struct {
		Archive *string `json:"archive"`
		Member  *string `json:"member"`
	}
	if err := json.Unmarshal(data, &entry); err != nil || entry.Archive == nil || entry.Member == nil {
		return nil, fmt.Errorf("debuginfo/%s: not a JSON object with archive and member: %w", name, ErrNotArtifact)
	}
	am := debugInfoArchive.FindStringSubmatch(*entry.Archive)
	if am == nil {
		return nil, fmt.Errorf("debuginfo/%s: archive %q is not ../nar/<52 nix-base32 chars>.nar[.xz|.zst|.bz2|.br]: %w", name, *entry.Archive, ErrNotArtifact)
	}
	if want := "lib/debug/.build-id/" + id[:2] + "/" + id[2:] + ".debug"; *entry.Member != want {
		return nil, fmt.Errorf("debuginfo/%s: member %q, want %q: %w", name, *entry.Member, want, ErrNotArtifact)
	}
	raw, err := nixbase32.DecodeString(am[1])
	if err != nil {
		return nil, fmt.Errorf("debuginfo/%s: archive hash: %w: %w", name, ErrNotArtifact, err)
	}
	return &FileArtifact{
		Type: spec.ArtifactTypeDebugInfo,
		Annotations: map[string]string{
			spec.AnnotationBuildID: id,
			spec.AnnotationArchive: "sha256:" + hex.EncodeToString(raw),
		},
		Files: []File{BytesFile("debuginfo/"+name, spec.MediaTypeDebugInfo, data)},
	}, nil
}

// NewListingArtifact checks <hash>.ls as a NAR listing in Nix's format
// (nar.ValidateListing, at most nar.MaxListingSize) and returns its
// artifact. Errors wrap ErrNotArtifact.
func NewListingArtifact(hash string, data []byte) (*FileArtifact, error) {
	if !spec.IsHashPart(hash) {
		return nil, fmt.Errorf("malformed listing name %q: want <32 nix-base32 chars>.ls: %w", hash+".ls", ErrNotArtifact)
	}
	if len(data) > nar.MaxListingSize {
		return nil, fmt.Errorf("%s.ls: %d bytes, more than %d: %w", hash, len(data), nar.MaxListingSize, ErrNotArtifact)
	}
	if err := nar.ValidateListing(data); err != nil {
		return nil, fmt.Errorf("%s.ls: %w: %w", hash, ErrNotArtifact, err)
	}
	return &FileArtifact{Type: spec.ArtifactTypeListing, Annotations: map[string]string{},
		Files: []File{BytesFile(spec.ListingTag(hash), spec.MediaTypeListing, data)}}, nil
}
