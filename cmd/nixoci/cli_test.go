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

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// writeCache makes a file:// binary cache holding app -> lib and returns
// its directory and the two store paths.
func writeCache(t *testing.T) (dir, app, lib string) {
	t.Helper()
	c := fixture.NewCache(t)
	c.Add("lib-1.0", "library", spec.CompressionZstd)
	c.Add("app-2.1", "application", spec.CompressionZstd, "lib-1.0")
	return c.Dir, fixture.StorePath("app-2.1"), fixture.StorePath("lib-1.0")
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
	// The tag push printed names the closure alone, or after a ':', in
	// every command that reads one.
	for _, ref := range []string{"app-2.1", ":app-2.1"} {
		if text := mustRun(t, "inspect", ref); !strings.Contains(text, "closure  oci:"+store+":app-2.1") || !strings.Contains(text, app) {
			t.Errorf("inspect %s:\n%s", ref, text)
		}
	}
	mustRun(t, "pull", "app-2.1", "--to", filepath.Join(t.TempDir(), "cache"))
	mustRun(t, "image", "--from", "app-2.1", "--to", "app-image", "--platform", "linux/amd64")
	other := "oci:" + filepath.Join(t.TempDir(), "other")
	mustRun(t, "copy", ":app-2.1", other+":copied")
	mustRun(t, "inspect", other+":copied")
	mustRun(t, "rm", "app-image")

	// A tag the default store lacks says where it looked and what else
	// names a closure; a target without a repository lists the forms.
	for _, tc := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"inspect", "nothing-here"}, 1, []string{"tag nothing-here: not found", "nothing-here is a tag of the default store oci:" + store, "HOST[:PORT]/REPO[:TAG]"}},
		{[]string{"pull", ":nothing-here", "--to", t.TempDir()}, 1, []string{"nothing-here is a tag of the default store"}},
		{[]string{"inspect", "localhost:5000"}, 2, []string{"TAG (also :TAG) for a closure in the default store"}},
		{[]string{"inspect", "--", "-bad-"}, 2, []string{"not a valid tag, and not a target"}},
	} {
		code, _, stderr := runCLI(t, tc.args...)
		if code != tc.code {
			t.Errorf("nixoci %s: exit %d, want %d: %s", strings.Join(tc.args, " "), code, tc.code, stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("nixoci %s: %q does not say %q", strings.Join(tc.args, " "), stderr, w)
			}
		}
	}
}

// TestCLIFreshDefaultStore: on a machine where nothing was pushed yet,
// a tag alone fails saying that the default store is empty and where it
// is.
func TestCLIFreshDefaultStore(t *testing.T) {
	store := filepath.Join(t.TempDir(), "never-created")
	t.Setenv("NIXOCI_STORE", store)
	code, _, stderr := runCLI(t, "inspect", "hello")
	if code != 1 || !strings.Contains(stderr, "hello is a tag of the default store oci:"+store) {
		t.Errorf("inspect hello on a fresh machine: exit %d, %q", code, stderr)
	}
}

// TestImageErrorsNameFlags: image.Build's errors about its options name
// the option; the CLI names the flag.
func TestImageErrorsNameFlags(t *testing.T) {
	t.Setenv("NIXOCI_STORE", t.TempDir())
	cache, app, _ := writeCache(t)
	layout := "oci:" + filepath.Join(t.TempDir(), "l")
	mustRun(t, "push", "--to", layout+":c", "--from-cache", "file://"+cache, app)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-layers", "1"}, "--max-layers 1: must be at least 2"},
		{[]string{"--user", "me"}, `--user "me": want UID:GID`},
	} {
		code, _, stderr := runCLI(t, append([]string{"image", "--from", layout + ":c", "--to", layout + ":img"}, tc.args...)...)
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("image %v: exit %d, stderr %q; want 1 and %q", tc.args, code, stderr, tc.want)
		}
	}
}
