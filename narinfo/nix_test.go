package narinfo

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// nixConfig lets the nix tools run without a daemon or build users.
const nixConfig = "experimental-features = nix-command\nbuild-users-group ="

// nixCommand returns a command running a Nix tool, isolated from the user's
// configuration and caches, or skips the test if the tool is missing.
func nixCommand(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not found: %v", name, err)
	}
	home := t.TempDir()
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(),
		"NIX_CONFIG="+nixConfig,
		"HOME="+home,
		"XDG_CACHE_HOME="+filepath.Join(home, "cache"),
		"XDG_CONFIG_HOME="+filepath.Join(home, "config"),
	)
	return cmd
}

func runNix(t *testing.T, name string, args ...string) {
	t.Helper()
	cmd := nixCommand(t, name, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// TestNixGeneratedKeys checks that keys made by
// nix-store --generate-binary-cache-key parse, and that the public key we
// derive from the secret one is the one Nix wrote.
func TestNixGeneratedKeys(t *testing.T) {
	dir := t.TempDir()
	sec, pub := filepath.Join(dir, "sec"), filepath.Join(dir, "pub")
	runNix(t, "nix-store", "--generate-binary-cache-key", "test-1", sec, pub)

	sk, err := LoadSecretKey(sec)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := ParsePublicKey(string(data))
	if err != nil {
		t.Fatal(err)
	}
	if got := sk.Public(); got.Name != "test-1" || got.Name != pk.Name || !got.Key.Equal(pk.Key) {
		t.Errorf("Public() = %v, want %v", got, pk)
	}
	if got := pk.String(); got != strings.TrimSpace(string(data)) {
		t.Errorf("String() = %q, want %q", got, data)
	}
}

// TestNixSignatures checks signatures against Nix itself, using a file://
// binary cache holding only the example narinfo: Nix must accept our
// signatures and we must accept Nix's, which, Ed25519 being deterministic,
// must be identical to ours.
func TestNixSignatures(t *testing.T) {
	if _, err := exec.LookPath("nix"); err != nil {
		t.Skipf("nix not found: %v", err)
	}
	dir := t.TempDir()
	sec, pub := filepath.Join(dir, "sec"), filepath.Join(dir, "pub")
	runNix(t, "nix-store", "--generate-binary-cache-key", "test-1", sec, pub)
	sk, err := LoadSecretKey(sec)
	if err != nil {
		t.Fatal(err)
	}
	pk := sk.Public()

	cache := filepath.Join(dir, "cache")
	if err := os.Mkdir(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cache, "nix-cache-info"), []byte("StoreDir: /nix/store\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	n := mustParse(t, nix28Example)
	n.Sigs = nil
	file := filepath.Join(cache, n.HashPart()+".narinfo")
	write := func(n *NarInfo) {
		t.Helper()
		if err := os.WriteFile(file, []byte(mustFormat(t, n)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	verify := func(key PublicKey) error {
		t.Helper()
		cmd := nixCommand(t, "nix", "store", "verify", "--store", "file://"+cache,
			"--no-contents", "--trusted-public-keys", key.String(), n.StorePath)
		out, err := cmd.CombinedOutput()
		t.Logf("nix store verify with %s: %v\n%s", key.Name, err, out)
		return err
	}

	// Unsigned, and signed with the wrong key: Nix refuses.
	write(n)
	if verify(pk) == nil {
		t.Fatal("nix store verify accepts an unsigned narinfo; the test is broken")
	}
	other := *n
	if err := other.AddSignature(testKey("test-1", 1)); err != nil {
		t.Fatal(err)
	}
	write(&other)
	if verify(pk) == nil {
		t.Error("nix store verify accepts a signature by another key")
	}

	// Signed by us: Nix accepts.
	mine := *n
	if err := mine.AddSignature(sk); err != nil {
		t.Fatal(err)
	}
	write(&mine)
	if err := verify(pk); err != nil {
		t.Errorf("nix store verify rejects our signature: %v", err)
	}

	// Signed by Nix: we accept, and the signature is ours.
	write(n)
	runNix(t, "nix", "store", "sign", "--store", "file://"+cache, "-k", sec, n.StorePath)
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := Parse(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("parsing the narinfo Nix wrote: %v\n%s", err, data)
	}
	if !pk.Verify(theirs) {
		t.Errorf("we reject Nix's signature %q", theirs.Sigs)
	}
	if len(theirs.Sigs) != 1 || theirs.Sigs[0] != mine.Sigs[0] {
		t.Errorf("Nix's signature %q differs from ours %q", theirs.Sigs, mine.Sigs)
	}
	if got := mustFormat(t, theirs); got != string(data) {
		t.Errorf("narinfo written by nix store sign does not round-trip:\n got:\n%s\nwant:\n%s", got, data)
	}
}
