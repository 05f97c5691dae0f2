package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// KeyPair is a binary-cache signing key made by
// `nix-store --generate-binary-cache-key NAME SECRET PUBLIC`.
type KeyPair struct {
	Name       string // the key name, e.g. "test-1"
	SecretFile string // file holding "NAME:base64(secret)"
	PublicFile string // file holding "NAME:base64(public)"
	Public     string // contents of PublicFile, trimmed: the value for trusted-public-keys
}

// GenerateKey makes a fresh signing key pair named name in a temp dir.
func GenerateKey(t testing.TB, name string) KeyPair {
	t.Helper()
	dir := t.TempDir()
	k := KeyPair{
		Name:       name,
		SecretFile: filepath.Join(dir, "secret.key"),
		PublicFile: filepath.Join(dir, "public.key"),
	}
	Run(t, "nix-store", "--generate-binary-cache-key", name, k.SecretFile, k.PublicFile)
	pub, err := os.ReadFile(k.PublicFile)
	if err != nil {
		t.Fatalf("GenerateKey %s: reading the public key: %v", name, err)
	}
	k.Public = strings.TrimSpace(string(pub))
	if !strings.HasPrefix(k.Public, name+":") {
		t.Fatalf("GenerateKey %s: public key %q does not start with %q", name, k.Public, name+":")
	}
	return k
}
