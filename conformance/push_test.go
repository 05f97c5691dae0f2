package conformance

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/spec"
)

// TestOrasPullIsABinaryCache: a closure pushed to a real registry and to
// an image layout, pulled with the real oras CLI, is a binary cache that
// the real Nix client substitutes from, with the signing key trusted.
func TestOrasPullIsABinaryCache(t *testing.T) {
	fx := testenv.BuildFixture(t, "oraspull")
	key := testenv.GenerateKey(t, "conformance-1")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})

	t.Run("registry", func(t *testing.T) {
		ref := reg.Ref("fx/app")
		out := run(t, "push", "--to", ref, "--tag", "v1", "--sign-key", key.SecretFile, fx.App)
		if !strings.HasPrefix(lastLine(out), "sha256:") {
			t.Fatalf("last line of stdout is %q, want the closure digest", lastLine(out))
		}
		dir := t.TempDir()
		oras(t, "pull", "--plain-http", ref+":v1", "-o", dir)
		copyAndCompare(t, dir, key.Public, fx.App, fx.Closure)
	})
	t.Run("layout", func(t *testing.T) {
		layout := filepath.Join(t.TempDir(), "layout")
		run(t, "push", "--to", "oci:"+layout, "--tag", "v1", "--sign-key", key.SecretFile, fx.App)
		dir := t.TempDir()
		oras(t, "pull", "--oci-layout", layout+":v1", "-o", dir)
		copyAndCompare(t, dir, key.Public, fx.App, fx.Closure)
	})
}

// TestNixociPull: nixoci pull gives a cache the client accepts; oras
// shows our artifact types; a wrong key is refused by the client.
func TestNixociPull(t *testing.T) {
	fx := testenv.BuildFixture(t, "nixocipull")
	key := testenv.GenerateKey(t, "conformance-2")
	other := testenv.GenerateKey(t, "other-1")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	ref := reg.Ref("fx")
	digest := lastLine(run(t, "push", "--to", ref+":t", "--sign-key", key.SecretFile, "--compression", "xz", fx.App))

	dir := t.TempDir()
	if got := lastLine(run(t, "pull", ref+":t", "--to", dir)); got != digest {
		t.Errorf("pull printed %s, push printed %s", got, digest)
	}
	copyAndCompare(t, dir, key.Public, fx.App, fx.Closure)

	store := testenv.NewStoreDir(t)
	if out, err := testenv.NixCopyFrom(t, "file://"+dir, store, other.Public, fx.App); err == nil {
		t.Errorf("nix copy with an untrusted key succeeded:\n%s", out)
	}

	manifest := oras(t, "manifest", "fetch", "--plain-http", ref+":t")
	if !strings.Contains(manifest, `"artifactType":"`+spec.ArtifactTypeClosureV2+`"`) {
		t.Errorf("closure manifest lacks artifactType %s:\n%s", spec.ArtifactTypeClosureV2, manifest)
	}
	pathManifest := oras(t, "manifest", "fetch", "--plain-http", ref+":"+spec.PathTag(fx.App))
	for _, want := range []string{spec.ArtifactTypePath, spec.MediaTypeNARXz, spec.MediaTypeNarInfo, fx.App} {
		if !strings.Contains(pathManifest, want) {
			t.Errorf("path manifest lacks %q:\n%s", want, pathManifest)
		}
	}
	inspect := run(t, "inspect", "--json", ref+":t")
	for _, p := range fx.Closure {
		if !strings.Contains(inspect, p) {
			t.Errorf("inspect --json lacks %s", p)
		}
	}
	if !strings.Contains(run(t, "inspect", ref+":t"), "conformance-2") {
		t.Error("inspect does not show the signing key name")
	}
}

// TestReproducibleDigests: the same closure pushed into fresh targets, at
// different parallelism and to different kinds of target, gives the same
// closure digest for each compression.
func TestReproducibleDigests(t *testing.T) {
	fx := testenv.BuildFixture(t, "repro")
	key := testenv.GenerateKey(t, "repro-1")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	for _, comp := range []string{"zstd", "xz"} {
		var digests []string
		var where []string
		for i, jobs := range []string{"1", "8"} {
			layout := "oci:" + filepath.Join(t.TempDir(), "l")
			repo := reg.Ref(comp + "-" + jobs)
			for _, to := range []string{layout, repo} {
				d := lastLine(run(t, "push", "--to", to, "--tag", "r", "--jobs", jobs, "--compression", comp, "--sign-key", key.SecretFile, fx.App))
				digests = append(digests, d)
				where = append(where, to+" jobs="+jobs)
			}
			_ = i
		}
		for i := range digests {
			if digests[i] != digests[0] {
				t.Errorf("%s: %s gave %s, %s gave %s", comp, where[0], digests[0], where[i], digests[i])
			}
		}
	}
}

// TestRepushReadsNothing: pushing a closure again reuses every path.
func TestRepushReusesPaths(t *testing.T) {
	fx := testenv.BuildFixture(t, "repush")
	layout := "oci:" + filepath.Join(t.TempDir(), "l")
	first := nixoci(t, "push", "--to", layout, fx.App)
	testenv.RunCmd(t, first)
	cmd := nixoci(t, "push", "--to", layout, fx.App)
	_, stderr, err := testenv.RunCmdErr(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "0 packed, 3 already stored") {
		t.Errorf("re-push did not reuse all paths: %s", stderr)
	}
}
