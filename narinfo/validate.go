package narinfo

import (
	"fmt"
	"strings"
)

// compressions lists the values of Compression this package accepts.
var compressions = []string{"xz", "zstd", "bzip2", "br", "none"}

// Validate checks n as Parse checks a narinfo it reads, so that a NarInfo
// built by hand can be written with Format: required fields are set, store
// paths, hashes and keys are well formed, and no value contains '\n' or '\r'.
// Unlike Parse, Validate requires Compression to be set, and it accepts
// hashes in any encoding NormaliseHash accepts. The error matches one of
// ErrMissingField, ErrInvalidValue or ErrSyntax.
func (n *NarInfo) Validate() error {
	if err := n.validate(); err != nil {
		return fmt.Errorf("narinfo: %w", err)
	}
	return nil
}

func (n *NarInfo) validate() error {
	if err := n.validatePath(); err != nil {
		return err
	}
	if n.URL == "" {
		return missing(keyURL)
	}
	if err := checkText(keyURL, n.URL); err != nil {
		return err
	}
	if n.Compression == "" {
		return missing(keyCompression)
	}
	if err := inField(keyCompression, checkCompression(n.Compression)); err != nil {
		return err
	}
	if n.FileHash != "" {
		if _, err := normaliseHash(n.FileHash); err != nil {
			return inField(keyFileHash, err)
		}
	}
	if n.Deriver != "" {
		if err := inField(keyDeriver, checkBaseName(n.Deriver)); err != nil {
			return err
		}
	}
	if err := checkText(keySystem, n.System); err != nil {
		return err
	}
	for _, s := range n.Sigs {
		if err := inField(keySig, checkSig(s)); err != nil {
			return err
		}
	}
	if err := checkText(keyCA, n.CA); err != nil {
		return err
	}
	for _, f := range n.Extra {
		if err := checkKey(f.Key); err != nil {
			return err
		}
		if isKnownKey(f.Key) {
			return newError(ErrSyntax, "extra field %s duplicates a known key", quote(f.Key))
		}
		if err := checkText(f.Key, f.Value); err != nil {
			return err
		}
	}
	return nil
}

// validatePath checks the fields that go into the fingerprint: StorePath,
// NarHash, NarSize and References.
func (n *NarInfo) validatePath() error {
	if n.StorePath == "" {
		return missing(keyStorePath)
	}
	if err := inField(keyStorePath, checkStorePath(n.StorePath)); err != nil {
		return err
	}
	if n.NarHash == "" {
		return missing(keyNarHash)
	}
	if _, err := normaliseHash(n.NarHash); err != nil {
		return inField(keyNarHash, err)
	}
	if n.NarSize == 0 {
		return missing(keyNarSize)
	}
	return inField(keyReferences, checkReferences(n.References))
}

// checkKey checks that key is usable as a narinfo key: non-empty ASCII
// letters, digits, '-', '_' and '.'.
func checkKey(key string) error {
	if key == "" {
		return newError(ErrSyntax, "empty key")
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return newError(ErrSyntax, "invalid character %q in key %s", c, quote(key))
		}
	}
	return nil
}

// checkText checks that the value of a free-text field fits on one line.
func checkText(key, value string) error {
	if i := strings.IndexAny(value, "\r\n"); i >= 0 {
		return inField(key, invalid("value contains %q", value[i]))
	}
	return nil
}

// checkCompression checks that c is a compression method Nix knows.
func checkCompression(c string) error {
	for _, known := range compressions {
		if c == known {
			return nil
		}
	}
	return invalid("unknown compression %s (want one of %s)", quote(c), strings.Join(compressions, ", "))
}

// checkReferences checks that refs are distinct store path base names.
func checkReferences(refs []string) error {
	seen := make(map[string]bool, len(refs))
	for _, r := range refs {
		if err := checkBaseName(r); err != nil {
			return err
		}
		if seen[r] {
			return invalid("duplicate reference %s", quote(r))
		}
		seen[r] = true
	}
	return nil
}

// checkSig checks that s has the form "<key name>:<signature>". The
// signature itself is only checked by Verify.
func checkSig(s string) error {
	name, sig, ok := strings.Cut(s, ":")
	if !ok || name == "" || sig == "" {
		return invalid("signature %s is not of the form <key name>:<signature>", quote(s))
	}
	if err := checkKeyName(name); err != nil {
		return invalid("signature %s: invalid key name", quote(s))
	}
	if strings.ContainsAny(sig, "\r\n") {
		return invalid("signature %s contains a line break", quote(s))
	}
	return nil
}
