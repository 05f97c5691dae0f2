package narinfo

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// maxKeyFileSize bounds how much of a key file LoadSecretKey reads.
const maxKeyFileSize = 4 << 10

// A SecretKey is a named Ed25519 private key for signing narinfos, as made
// by nix-store --generate-binary-cache-key.
//
// Formatting a SecretKey with the fmt package prints only its name.
type SecretKey struct {
	Name string
	Key  ed25519.PrivateKey
}

// A PublicKey is a named Ed25519 public key for verifying narinfo
// signatures, as listed in Nix's trusted-public-keys setting.
type PublicKey struct {
	Name string
	Key  ed25519.PublicKey
}

// ParseSecretKey parses a secret key in Nix's format, "<name>:<base64 of
// the 64-byte Ed25519 private key>". Surrounding white space, such as a
// trailing newline, is ignored. The error matches ErrInvalidKey and never
// contains any part of s.
func ParseSecretKey(s string) (SecretKey, error) {
	k, err := parseSecretKey(s)
	if err != nil {
		return SecretKey{}, fmt.Errorf("narinfo: secret key: %w", err)
	}
	return k, nil
}

// LoadSecretKey reads a secret key file, such as one written by nix-store
// --generate-binary-cache-key. Errors name the file but never contain key
// material.
func LoadSecretKey(path string) (SecretKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return SecretKey{}, fmt.Errorf("narinfo: secret key: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return SecretKey{}, fmt.Errorf("narinfo: secret key: %w", err)
	}
	if len(data) > maxKeyFileSize {
		return SecretKey{}, newError(ErrInvalidKey, "narinfo: secret key file %s: larger than %d bytes", quote(path), maxKeyFileSize)
	}
	k, err := parseSecretKey(string(data))
	clear(data)
	if err != nil {
		return SecretKey{}, fmt.Errorf("narinfo: secret key file %s: %w", quote(path), err)
	}
	return k, nil
}

func parseSecretKey(s string) (SecretKey, error) {
	name, key, err := splitKey(s, ed25519.PrivateKeySize)
	if err != nil {
		return SecretKey{}, err
	}
	priv := ed25519.PrivateKey(key)
	// The second half of an Ed25519 private key is the public key, which
	// must belong to the seed in the first half.
	want := ed25519.NewKeyFromSeed(priv.Seed())
	if !bytes.Equal(want[ed25519.SeedSize:], priv[ed25519.SeedSize:]) {
		return SecretKey{}, newError(ErrInvalidKey, "public half of the key does not match its seed")
	}
	return SecretKey{Name: name, Key: priv}, nil
}

// ParsePublicKey parses a public key in Nix's format, "<name>:<base64 of
// the 32-byte Ed25519 public key>". Surrounding white space is ignored. The
// error matches ErrInvalidKey.
func ParsePublicKey(s string) (PublicKey, error) {
	name, key, err := splitKey(s, ed25519.PublicKeySize)
	if err != nil {
		return PublicKey{}, fmt.Errorf("narinfo: public key: %w", err)
	}
	return PublicKey{Name: name, Key: ed25519.PublicKey(key)}, nil
}

// LoadPublicKeys reads a file of public keys in Nix's format, such as
// one written by nix-store --generate-binary-cache-key, separated by
// white space (at least one). Errors name the file.
func LoadPublicKeys(path string) ([]PublicKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("narinfo: public keys: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("narinfo: public keys: %w", err)
	}
	if len(data) > maxKeyFileSize {
		return nil, newError(ErrInvalidKey, "narinfo: public key file %s: larger than %d bytes", quote(path), maxKeyFileSize)
	}
	var keys []PublicKey
	for i, field := range strings.Fields(string(data)) {
		k, err := ParsePublicKey(field)
		if err != nil {
			return nil, fmt.Errorf("narinfo: public key file %s: key %d: %w", quote(path), i+1, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, newError(ErrInvalidKey, "narinfo: public key file %s: no key", quote(path))
	}
	return keys, nil
}

// splitKey splits "<name>:<base64>", trimmed of white space, into the name
// and the decoded key, which must be size bytes long. Its errors never
// contain any part of s.
func splitKey(s string, size int) (name string, key []byte, err error) {
	name, b64, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return "", nil, newError(ErrInvalidKey, "not of the form <name>:<base64 key>")
	}
	if err := checkKeyName(name); err != nil {
		return "", nil, err
	}
	key, err = base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "", nil, newError(ErrInvalidKey, "key is not valid base64")
	}
	if len(key) != size {
		return "", nil, newError(ErrInvalidKey, "key is %d bytes long, want %d", len(key), size)
	}
	return name, key, nil
}

// checkKeyName checks that name is usable as a key name: non-empty, without
// ':', white space or control characters. Its errors do not contain name.
func checkKeyName(name string) error {
	if name == "" {
		return newError(ErrInvalidKey, "empty key name")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c == ':' || c == 0x7f {
			return newError(ErrInvalidKey, "key name contains %q", c)
		}
	}
	return nil
}

// Public returns the public key belonging to k. If k.Key is not
// ed25519.PrivateKeySize bytes long, the returned Key is nil.
func (k SecretKey) Public() PublicKey {
	if len(k.Key) != ed25519.PrivateKeySize {
		return PublicKey{Name: k.Name}
	}
	return PublicKey{Name: k.Name, Key: k.Key.Public().(ed25519.PublicKey)}
}

// Format implements fmt.Formatter so that printing a SecretKey with any
// verb shows its name but never the key.
func (k SecretKey) Format(f fmt.State, verb rune) {
	io.WriteString(f, "SecretKey("+strconv.Quote(k.Name)+", <redacted>)")
}

// String returns the key in Nix's format, "<name>:<base64 key>", as
// accepted by ParsePublicKey and Nix's trusted-public-keys setting.
func (k PublicKey) String() string {
	return k.Name + ":" + base64.StdEncoding.EncodeToString(k.Key)
}
