package spec

import (
	"fmt"
	"path"
	"regexp"
	"strings"
)

var tagPattern = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)

// ValidTag reports whether s is a valid OCI tag.
func ValidTag(s string) bool { return tagPattern.MatchString(s) }

// PathTag is the tag of a store path's manifest: the 32-character
// nix-base32 hash part of the path, e.g. "wmax4jpcbcyvaqcx04skyir4x9j40ygh"
// for /nix/store/wmax4jpcbcyvaqcx04skyir4x9j40ygh-fx-app.
func PathTag(storePath string) string {
	base := path.Base(storePath)
	if i := strings.IndexByte(base, '-'); i > 0 {
		return base[:i]
	}
	return base
}

// DefaultClosureTag derives a closure tag from its first root when the user
// gives none: the root's name with characters a tag cannot hold replaced
// by '_', e.g. "fx-app" for /nix/store/<hash>-fx-app.
func DefaultClosureTag(root string) (string, error) {
	base := path.Base(root)
	i := strings.IndexByte(base, '-')
	if i < 0 || i+1 == len(base) {
		return "", fmt.Errorf("cannot derive a tag from %q: not a store path", root)
	}
	name := []byte(base[i+1:])
	for j, c := range name {
		ok := c == '_' || c == '.' || c == '-' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9')
		if !ok {
			name[j] = '_'
		}
	}
	if name[0] == '.' || name[0] == '-' {
		name = append([]byte{'_'}, name...)
	}
	if len(name) > 128 {
		name = name[:128]
	}
	return string(name), nil
}

// PulledClosureTag is the tag of the closure serve stores for a path it
// pulled through from an upstream (SPEC.md section 14.4): "pulled." and
// the root's hash part, e.g. "pulled.wmax4jpcbcyvaqcx04skyir4x9j40ygh".
func PulledClosureTag(root string) string { return "pulled." + PathTag(root) }

// TagKind is what a tag's name says it names (SPEC.md 5.3, 8.2, 9,
// 10.3). Tags nixoci gives its own artifacts follow fixed forms; every
// other tag is one a user chose, naming a closure, an image or anything
// else, which only reading it tells.
type TagKind int

const (
	// TagNamed is a tag a user chose (a closure's, an image's, another
	// tool's): read what it names to know.
	TagNamed TagKind = iota
	// TagPath is a store path's tag: its 32-character nix-base32 hash part.
	TagPath
	// TagLayer is a layer artifact's: "<hash>.layer.<compression>" or
	// "group.<40 hex>.<compression>".
	TagLayer
	// TagReferrers is the referrers tag schema's "sha256-<64 hex>".
	TagReferrers
	// TagCompose is an image composed by serve --registry:
	// "compose.<40 hex>".
	TagCompose
	// TagGC is the garbage collector's own: its marker and its mark
	// record.
	TagGC
	// TagFile is a file of a store path or derivation (SPEC.md 12): a
	// build log, NAR listing, realisation or debug-info entry (IsFileTag).
	TagFile
)

var (
	layerTagPattern     = regexp.MustCompile(`^(?:[0-9a-df-np-sv-z]{32}\.layer|group\.[0-9a-f]{40})\.[a-z0-9]+$`)
	referrersTagPattern = regexp.MustCompile(`^sha256-[0-9a-f]{64}$`)
	composeTagPattern   = regexp.MustCompile(`^compose\.[0-9a-f]{40}$`)
)

// ClassifyTag says what a tag's name says it names. It is the one
// classification every reader of tags uses: the substituter's catalog
// reads only TagNamed tags as possible closures; the garbage collector
// takes TagNamed and TagCompose tags as possible roots, and TagPath,
// TagLayer and TagReferrers ones as what roots may reach (a new kind of
// tag is added here, and to the collector's look, gc/look.go).
func ClassifyTag(tag string) TagKind {
	switch {
	case tag == GCMarkerTag || tag == GCMarkTag:
		return TagGC
	case IsHashPart(tag):
		return TagPath
	case referrersTagPattern.MatchString(tag):
		return TagReferrers
	case layerTagPattern.MatchString(tag):
		return TagLayer
	case composeTagPattern.MatchString(tag):
		return TagCompose
	case IsFileTag(tag):
		return TagFile
	}
	return TagNamed
}

// Record kinds: what serve stored, recorded per day (SPEC.md section
// 14.5).
const (
	RecordUploaded = "uploaded" // paths uploaded through serve --upload
	RecordPulled   = "pulled"   // paths pulled through from an upstream
)

// RecordTag is the tag of the n-th record (from 1) of the paths of kind
// stored on day (UTC, YYYY-MM-DD) by the serve instance instance
// (SPEC.md section 14.5), e.g. "uploaded.2026-03-01.ci-runner-7.1".
func RecordTag(kind, day, instance string, n int) string {
	return fmt.Sprintf("%s.%s.%s.%d", kind, day, instance, n)
}

// MaxInstanceLen bounds an instance name, so that every record tag is a
// valid tag.
const MaxInstanceLen = 64

// RecordInstance makes a record instance name of s (a host name, say):
// lower case, each run of characters other than a-z, 0-9 and '-'
// replaced by one '-', no '-' at either end, at most MaxInstanceLen
// characters; "serve" if nothing is left.
func RecordInstance(s string) string {
	out := make([]byte, 0, len(s))
	for _, c := range []byte(strings.ToLower(s)) {
		ok := ('a' <= c && c <= 'z') || ('0' <= c && c <= '9')
		switch {
		case ok:
			out = append(out, c)
		case len(out) > 0 && out[len(out)-1] != '-':
			out = append(out, '-')
		}
	}
	if len(out) > MaxInstanceLen {
		out = out[:MaxInstanceLen]
	}
	if name := strings.Trim(string(out), "-"); name != "" {
		return name
	}
	return "serve"
}

// ValidInstance reports whether s is a record instance name as
// RecordInstance makes them.
func ValidInstance(s string) bool { return s != "" && RecordInstance(s) == s }
