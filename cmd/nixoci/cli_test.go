package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// writeCache makes a file:// binary cache holding app -> lib and returns
// its directory and the two store paths.
func writeCache(t *testing.T) (dir, app, lib string) {
	t.Helper()
	dir = t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "nar"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nix-cache-info"), []byte(spec.CacheInfo("/nix/store", spec.DefaultPriority)), 0o644); err != nil {
		t.Fatal(err)
	}
	base := func(name string) string {
		sum := sha256.Sum256([]byte(name))
		return nixbase32.EncodeToString(sum[:20]) + "-" + name
	}
	add := func(name, content string, refs ...string) string {
		n := fixture.FileNAR(t, content)
		z := fixture.Compress(t, n, spec.CompressionZstd)
		info := &narinfo.NarInfo{
			StorePath:   "/nix/store/" + base(name),
			URL:         spec.NarURL(fixture.Nix32(z), spec.CompressionZstd),
			Compression: "zstd",
			FileHash:    "sha256:" + fixture.Nix32(z),
			FileSize:    uint64(len(z)),
			NarHash:     "sha256:" + fixture.Nix32(n),
			NarSize:     uint64(len(n)),
			References:  []string{},
		}
		for _, r := range refs {
			info.References = append(info.References, base(r))
		}
		text, err := info.Format()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, info.URL), z, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, info.HashPart()+".narinfo"), text, 0o644); err != nil {
			t.Fatal(err)
		}
		return info.StorePath
	}
	lib = add("lib-1.0", "library\n")
	app = add("app-2.1", "#!/bin/sh\nexec lib\n", "lib-1.0")
	return dir, app, lib
}

// writeKey writes a Nix secret key file and returns its path and key.
func writeKey(t *testing.T, name string) (string, narinfo.PublicKey) {
	t.Helper()
	seed := sha256.Sum256([]byte(name))
	k := ed25519.NewKeyFromSeed(seed[:])
	p := filepath.Join(t.TempDir(), name+".sec")
	if err := os.WriteFile(p, []byte(name+":"+base64.StdEncoding.EncodeToString(k)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, narinfo.SecretKey{Name: name, Key: k}.Public()
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	code, stdout, stderr := runCLI(t, args...)
	if code != 0 {
		t.Fatalf("nixoci %s: exit code %d\n%s", strings.Join(args, " "), code, stderr)
	}
	return stdout
}

func TestCLIPushPullInspect(t *testing.T) {
	t.Setenv("NIXOCI_STORE", t.TempDir())
	cache, app, lib := writeCache(t)
	keyFile, pub := writeKey(t, "test-cache-1")
	layout := filepath.Join(t.TempDir(), "layout")

	out := mustRun(t, "push", app, "--to", "oci:"+layout, "--from-cache", "file://"+cache, "--sign-key", keyFile, "--tag", "demo", "--jobs", "2")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 || lines[0] != "oci:"+layout+":demo" || !strings.HasPrefix(lines[1], "sha256:") {
		t.Fatalf("push stdout = %q, want the tagged target and a digest", out)
	}
	digest := lines[1]

	dir := filepath.Join(t.TempDir(), "cache")
	if got := mustRun(t, "pull", "oci:"+layout+":demo", "--to", dir); got != digest+"\n" {
		t.Errorf("pull stdout = %q, want %q", got, digest+"\n")
	}
	for _, p := range []string{app, lib} {
		data, err := os.ReadFile(filepath.Join(dir, spec.PathTag(p)+".narinfo"))
		if err != nil {
			t.Fatal(err)
		}
		info, err := narinfo.Parse(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if !pub.Verify(info) {
			t.Errorf("%s: pulled narinfo not signed by %s", p, pub.Name)
		}
		if _, err := os.Stat(filepath.Join(dir, info.URL)); err != nil {
			t.Errorf("%s: NAR not pulled: %v", p, err)
		}
	}
	if data, err := os.ReadFile(filepath.Join(dir, "nix-cache-info")); err != nil || string(data) != spec.CacheInfo("/nix/store", spec.DefaultPriority) {
		t.Errorf("nix-cache-info = %q, %v", data, err)
	}

	var s artifact.ClosureSummary
	if err := json.Unmarshal([]byte(mustRun(t, "inspect", "--json", "oci:"+layout+":demo")), &s); err != nil {
		t.Fatal(err)
	}
	if s.Reference != "oci:"+layout+":demo" || s.Digest != digest || len(s.Paths) != 2 || len(s.Roots) != 1 || s.Roots[0] != app {
		t.Errorf("inspect --json = %+v", s)
	}
	text := mustRun(t, "inspect", "oci:"+layout+":demo")
	for _, want := range []string{"closure  oci:" + layout + ":demo", "digest   " + digest, app, lib, "test-cache-1"} {
		if !strings.Contains(text, want) {
			t.Errorf("inspect output does not contain %q:\n%s", want, text)
		}
	}

	// The tag may be given in --to; the same closure gets the same digest.
	out = mustRun(t, "push", "--to", "oci:"+layout+":again", "--from-cache", "file://"+cache, "--sign-key", keyFile, app)
	if want := "oci:" + layout + ":again\n" + digest + "\n"; out != want {
		t.Errorf("second push stdout = %q, want %q", out, want)
	}
}

// TestCLIDefaultStore: without --to, push writes to $NIXOCI_STORE and
// tags the closure with the name of its first path.
func TestCLIDefaultStore(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store")
	t.Setenv("NIXOCI_STORE", store)
	cache, app, _ := writeCache(t)
	out := mustRun(t, "push", "--from-cache", "file://"+cache, app)
	if !strings.HasPrefix(out, "oci:"+store+":app-2.1\n") {
		t.Errorf("push stdout = %q, want the default store tagged app-2.1", out)
	}
	if _, err := os.Stat(filepath.Join(store, "oci-layout")); err != nil {
		t.Errorf("default store not created: %v", err)
	}
}
