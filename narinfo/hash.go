package narinfo

import (
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/nixhash"
)

const sha256Size = 32

// NormaliseHash converts a SHA-256 hash in any encoding Nix accepts to the
// form narinfo files use, "sha256:<nix-base32>". It accepts
// "sha256:<nix-base32>", "sha256:<hex>", "sha256:<base64>" and SRI
// "sha256-<base64>". Other algorithms and hashes without an algorithm
// prefix are rejected with an error matching ErrInvalidValue.
func NormaliseHash(s string) (string, error) {
	h, err := normaliseHash(s)
	if err != nil {
		return "", fmt.Errorf("narinfo: %w", err)
	}
	return h, nil
}

// HashDigestHex returns the digest of the SHA-256 hash s, in any encoding
// NormaliseHash accepts, as lowercase hex: the form OCI digests use after
// "sha256:".
func HashDigestHex(s string) (string, error) {
	d, err := parseSHA256(s)
	if err != nil {
		return "", fmt.Errorf("narinfo: %w", err)
	}
	return hex.EncodeToString(d), nil
}

// HashFromHex converts a hex-encoded SHA-256 digest, without any prefix, to
// "sha256:<nix-base32>".
func HashFromHex(h string) (string, error) {
	if len(h) != hex.EncodedLen(sha256Size) {
		return "", fmt.Errorf("narinfo: %w", invalid("hex sha256 digest %s has %d characters, want %d",
			quote(h), len(h), hex.EncodedLen(sha256Size)))
	}
	d, err := hex.DecodeString(h)
	if err != nil {
		return "", fmt.Errorf("narinfo: %w", invalid("hex sha256 digest %s is not hex", quote(h)))
	}
	return formatSHA256(d), nil
}

// HashFromDigest formats a raw SHA-256 digest, such as a sha256 hash's
// Sum(nil), as "sha256:<nix-base32>".
func HashFromDigest(d []byte) (string, error) {
	if len(d) != sha256Size {
		return "", fmt.Errorf("narinfo: %w", invalid("sha256 digest has %d bytes, want %d", len(d), sha256Size))
	}
	return formatSHA256(d), nil
}

// normaliseHash is NormaliseHash without the "narinfo: " prefix on errors.
func normaliseHash(s string) (string, error) {
	d, err := parseSHA256(s)
	if err != nil {
		return "", err
	}
	return formatSHA256(d), nil
}

// parseSHA256 returns the digest of a prefixed SHA-256 hash in any encoding.
func parseSHA256(s string) ([]byte, error) {
	if !strings.HasPrefix(s, "sha256:") && !strings.HasPrefix(s, "sha256-") {
		if i := strings.IndexAny(s, ":-"); i > 0 {
			return nil, invalid("hash %s: unsupported algorithm %s, want sha256", quote(s), quote(s[:i]))
		}
		return nil, invalid("hash %s: missing \"sha256:\" prefix", quote(s))
	}
	h, err := nixhash.ParseAny(s, nil)
	if err != nil {
		return nil, &detailError{kind: ErrInvalidValue, msg: "invalid hash " + quote(s), cause: err}
	}
	if h.Algo() != nixhash.SHA256 || len(h.Digest()) != sha256Size {
		return nil, invalid("hash %s is not sha256", quote(s))
	}
	return h.Digest(), nil
}

// formatSHA256 formats a SHA-256 digest as "sha256:<nix-base32>".
func formatSHA256(d []byte) string {
	return "sha256:" + nixbase32.EncodeToString(d)
}
