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
