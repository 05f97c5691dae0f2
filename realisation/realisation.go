package realisation

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nixoci/nixoci/narinfo"
)

// MaxSize bounds a realisation file: Nix writes a few hundred bytes, more
// only with many dependentRealisations.
const MaxSize = 1 << 20

// ErrInvalid: a realisation, key or signature is malformed.
var ErrInvalid = errors.New("invalid realisation")

func invalid(format string, args ...any) error {
	return fmt.Errorf("realisation: %w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// HashKey is a realisation's key before Nix 2.35: the derivation's hash
// modulo and an output name, written "sha256:<hex>!<output>".
type HashKey struct {
	DrvHash string // "sha256:<64 lowercase hex digits>"
	Output  string
}

// String is the key as Nix writes it (DrvOutput::to_string).
func (k HashKey) String() string { return k.DrvHash + "!" + k.Output }

// File is the key's file in a binary cache: "realisations/<key>.doi".
func (k HashKey) File() string { return "realisations/" + k.String() + ".doi" }

// ParseHashKey parses "sha256:<hex>!<output>".
func ParseHashKey(s string) (HashKey, error) {
	h, out, ok := strings.Cut(s, "!")
	if !ok {
		return HashKey{}, invalid("id %q is not sha256:<hex>!<output>", s)
	}
	hex, ok := strings.CutPrefix(h, "sha256:")
	if !ok || len(hex) != 64 || strings.Trim(hex, "0123456789abcdef") != "" {
		return HashKey{}, invalid("id %q: the derivation hash is not sha256:<64 lowercase hex digits>", s)
	}
	if err := CheckOutputName(out); err != nil {
		return HashKey{}, fmt.Errorf("id %q: %w", s, err)
	}
	return HashKey{DrvHash: h, Output: out}, nil
}

// PathKey is a realisation's key in Nix 2.35: a derivation and an output
// name, written "<drv base name>^<output>".
type PathKey struct {
	Drv    string // base name of the derivation, "<hash>-<name>.drv"
	Output string
}

// String is the key as Nix writes it (DrvOutput::to_string).
func (k PathKey) String() string { return k.Drv + "^" + k.Output }

// File is the key's file in a binary cache:
// "build-trace-v2/<drv base name>/<output>.doi".
func (k PathKey) File() string { return "build-trace-v2/" + k.Drv + "/" + k.Output + ".doi" }

// NewPathKey checks drv (a base name of a derivation) and output.
func NewPathKey(drv, output string) (PathKey, error) {
	if err := CheckDrvName(drv); err != nil {
		return PathKey{}, err
	}
	if err := CheckOutputName(output); err != nil {
		return PathKey{}, err
	}
	return PathKey{Drv: drv, Output: output}, nil
}

// CheckDrvName checks that s is the base name of a derivation: a store
// path base name ending in ".drv".
func CheckDrvName(s string) error {
	if err := narinfo.CheckBaseName(s); err != nil {
		return fmt.Errorf("realisation: %w: %w", ErrInvalid, err)
	}
	if !strings.HasSuffix(s, ".drv") {
		return invalid("%q is not a derivation (no .drv suffix)", s)
	}
	return nil
}

// CheckOutputName checks a derivation output name as Nix does: 1 to 211
// characters of a store path name, not starting with '.'.
func CheckOutputName(s string) error {
	if s == "" || len(s) > 211 || s[0] == '.' {
		return invalid("output name %q: not 1 to 211 characters, or starts with '.'", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("+-._?=", c) >= 0) {
			return invalid("output name %q: character %q not allowed", s, c)
		}
	}
	return nil
}

// checkSig checks "<key name>:<base64 of 64 bytes>".
func checkSig(s string) error {
	name, b64, ok := strings.Cut(s, ":")
	if !ok || name == "" {
		return invalid("signature %q is not <key name>:<base64>", s)
	}
	sig, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return invalid("signature by %q is not the base64 of %d bytes", name, ed25519.SignatureSize)
	}
	return nil
}

// sign makes "<key name>:<base64>" over fingerprint.
func sign(k narinfo.SecretKey, fingerprint string) (string, error) {
	if len(k.Key) != ed25519.PrivateKeySize || k.Name == "" || strings.ContainsAny(k.Name, ": \t\n") {
		return "", fmt.Errorf("realisation: signing key %q is not usable", k.Name)
	}
	return k.Name + ":" + base64.StdEncoding.EncodeToString(ed25519.Sign(k.Key, []byte(fingerprint))), nil
}

// verify reports whether sig ("<name>:<base64>") is a valid signature of
// fingerprint by one of keys.
func verify(sig, fingerprint string, keys []narinfo.PublicKey) bool {
	name, b64, ok := strings.Cut(sig, ":")
	if !ok {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != ed25519.SignatureSize {
		return false
	}
	for _, k := range keys {
		if k.Name == name && len(k.Key) == ed25519.PublicKeySize && ed25519.Verify(k.Key, []byte(fingerprint), raw) {
			return true
		}
	}
	return false
}

// decodeObject decodes data as one JSON object, bounded by MaxSize.
func decodeObject(data []byte) (map[string]json.RawMessage, error) {
	if len(data) > MaxSize {
		return nil, invalid("%d bytes, more than the %d a realisation may have", len(data), MaxSize)
	}
	var m map[string]json.RawMessage
	d := json.NewDecoder(bytes.NewReader(data))
	if err := d.Decode(&m); err != nil {
		return nil, invalid("not a JSON object: %v", err)
	}
	if m == nil {
		return nil, invalid("not a JSON object")
	}
	if _, err := d.Token(); err == nil {
		return nil, invalid("data after the JSON object")
	}
	return m, nil
}

func stringField(m map[string]json.RawMessage, key string) (string, error) {
	raw, ok := m[key]
	if !ok {
		return "", invalid("no %q", key)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", invalid("%q is not a string", key)
	}
	return s, nil
}

// outPathBase accepts a store path base name, or an absolute path in
// storeDir, and returns the base name.
func outPathBase(s, storeDir string) (string, error) {
	if rest, ok := strings.CutPrefix(s, storeDir+"/"); ok {
		s = rest
	}
	if err := narinfo.CheckBaseName(s); err != nil {
		return "", fmt.Errorf("realisation: outPath: %w: %w", ErrInvalid, err)
	}
	return s, nil
}

// jsonString writes s as nlohmann::json's dump() does: only '"', '\\'
// and control characters escaped, everything else as is.
func jsonString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if c < 0x20 {
				fmt.Fprintf(b, `\u%04x`, c)
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
}

func sortedUnique(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return slices.Compact(c)
}
