package narinfo

import (
	"fmt"
	"path"
	"strings"

	"github.com/nix-community/go-nix/pkg/storepath"

	"github.com/nixoci/nixoci/spec"
)

const (
	// hashPartLen is the length of the hash part of a store path.
	hashPartLen = 32
	// maxNameLen is the longest name Nix accepts in a store path.
	maxNameLen = 211
)

// CheckStorePath checks that p is an absolute store path, a store
// directory followed by "/<hash>-<name>", with the rules Nix applies to
// the hash and the name. The error matches ErrInvalidValue.
func CheckStorePath(p string) error {
	if err := checkStorePath(p); err != nil {
		return fmt.Errorf("narinfo: %w", err)
	}
	return nil
}

// checkStorePath checks that p is an absolute store path: a store
// directory followed by "/<hash>-<name>".
func checkStorePath(p string) error {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return invalid("%s is not an absolute store path", quote(p))
	}
	if err := checkStoreDir(p[:i]); err != nil {
		return err
	}
	return checkBaseName(p[i+1:])
}

// checkStoreDir checks that dir is usable as a store directory: an absolute,
// clean path other than "/", without control characters.
func checkStoreDir(dir string) error {
	if dir == "" || dir[0] != '/' || path.Clean(dir) != dir {
		return invalid("store directory %s is not a clean absolute path other than \"/\"", quote(dir))
	}
	for i := 0; i < len(dir); i++ {
		if c := dir[i]; c < ' ' || c == 0x7f {
			return invalid("store directory %s contains control character %q", quote(dir), c)
		}
	}
	return nil
}

// checkBaseName checks that s is a store path base name, "<hash>-<name>",
// with the rules Nix applies: a 32-character nix-base32 hash, and a name of
// 1 to 211 characters from [A-Za-z0-9+-._?=].
func checkBaseName(s string) error {
	if len(s) < hashPartLen+2 || s[hashPartLen] != '-' {
		return invalid("%s is not a store path base name (<32-character hash>-<name>)", quote(s))
	}
	if !spec.IsHashPart(s[:hashPartLen]) {
		return invalid("store path %s: hash part %s is not nix-base32", quote(s), quote(s[:hashPartLen]))
	}
	name := s[hashPartLen+1:]
	if len(name) > maxNameLen {
		return invalid("store path %s: name longer than %d characters", quote(s), maxNameLen)
	}
	for i := 0; i < len(name); i++ {
		if !isNameChar(name[i]) {
			return invalid("store path %s: invalid character %q in name", quote(s), name[i])
		}
	}
	// The checks above are stricter than storepath.FromString, which does
	// not insist on the '-' separator; it also decodes the hash part.
	if _, err := storepath.FromString(s); err != nil {
		return &detailError{kind: ErrInvalidValue, msg: "store path " + quote(s), cause: err}
	}
	return nil
}

// isNameChar reports whether c may appear in the name of a store path.
func isNameChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("+-._?=", c) >= 0
}
