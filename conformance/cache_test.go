package conformance

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/spec"
)

// TestFromCacheKeepsNARs: a cache written by `nix copy --to file://`
// (Nix's own xz), imported with --from-cache and pulled back, has
// byte-identical NAR files, and the client still accepts it.
func TestFromCacheKeepsNARs(t *testing.T) {
	fx := testenv.BuildFixture(t, "fromcache")
	key := testenv.GenerateKey(t, "nixcopy-1")
	cache := t.TempDir()
	testenv.Run(t, "nix", "copy", "--to", "file://"+cache+"?secret-key="+key.SecretFile, fx.App)

	layout := "oci:" + filepath.Join(t.TempDir(), "l")
	run(t, "push", "--from-cache", "file://"+cache, "--to", layout+":imported", fx.App)
	out := t.TempDir()
	run(t, "pull", layout+":imported", "--to", out)

	nars, _ := filepath.Glob(filepath.Join(cache, "nar", "*.nar.xz"))
	if len(nars) != len(fx.Closure) {
		t.Fatalf("nix copy wrote %d .nar.xz files, want %d", len(nars), len(fx.Closure))
	}
	for _, want := range nars {
		got := filepath.Join(out, "nar", filepath.Base(want))
		a, _ := os.ReadFile(want)
		b, err := os.ReadFile(got)
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s: pulled file differs from the one nix copy wrote (err %v)", filepath.Base(want), err)
		}
	}
	copyAndCompare(t, out, key.Public, fx.App, fx.Closure)
}

// TestLargeClosure: a closure of over 15,000 store paths, too large for
// one 4 MiB manifest or index, is split into parts, in both closure
// versions; it pulls back whole with nixoci and with oras, and Nix reads
// every narinfo.
func TestLargeClosure(t *testing.T) {
	c := newSynthCache(t)
	root, n := c.tree("big", 150, 100)
	// One layout: the second push reuses every path and writes only its
	// closure, in the other version.
	layoutDir := filepath.Join(t.TempDir(), "l")
	layout := "oci:" + layoutDir
	for _, tc := range []struct {
		version, artifactType, tag string
		parts                      int
	}{
		{spec.ClosureVersion, spec.ArtifactTypeClosureV2, "big", 3},
		{spec.Version, spec.ArtifactTypeClosure, "big1", 2},
	} {
		t.Run("v"+tc.version, func(t *testing.T) {
			cmd := nixoci(t, "push", "--from-cache", c.url(), "--to", layout+":"+tc.tag, "--jobs", "16", "--closure-version", tc.version, root)
			_, stderr, err := testenv.RunCmdErr(cmd)
			if err != nil {
				t.Fatalf("push: %v\n%s", err, stderr)
			}
			// Version 1: about 370 bytes a path, two parts; version 2: about
			// 1 KB a path with the narinfo in the index, more parts.
			if !strings.Contains(stderr, "split into "+strconv.Itoa(tc.parts)+" parts") {
				t.Errorf("push of %d paths: want a split into %d parts, got: %s", n, tc.parts, stderr)
			}

			// Every manifest nixoci wrote respects the registry limit.
			index := oras(t, "manifest", "fetch", "--oci-layout", layoutDir+":"+tc.tag)
			var idx struct {
				ArtifactType string `json:"artifactType"`
				Manifests    []struct {
					Digest string `json:"digest"`
					Size   int    `json:"size"`
				} `json:"manifests"`
			}
			if err := json.Unmarshal([]byte(index), &idx); err != nil {
				t.Fatal(err)
			}
			if idx.ArtifactType != tc.artifactType || len(idx.Manifests) != tc.parts {
				t.Fatalf("closure index: artifactType %q with %d parts", idx.ArtifactType, len(idx.Manifests))
			}
			for _, m := range idx.Manifests {
				part := oras(t, "manifest", "fetch", "--oci-layout", layoutDir+"@"+m.Digest)
				if len(part) > spec.MaxManifestSize || m.Size > spec.MaxManifestSize {
					t.Errorf("part %s is %d bytes, over %d", m.Digest, len(part), spec.MaxManifestSize)
				}
			}

			out := t.TempDir()
			run(t, "pull", layout+":"+tc.tag, "--to", out)
			narinfos, _ := filepath.Glob(filepath.Join(out, "*.narinfo"))
			if len(narinfos) != n {
				t.Fatalf("pulled %d narinfos, want %d", len(narinfos), n)
			}
			if tc.version == spec.Version {
				return // oras and Nix read version 1 closures as before (TestOrasPullIsABinaryCache covers them small)
			}
			orasOut := t.TempDir()
			oras(t, "pull", "--oci-layout", layoutDir+":"+tc.tag, "-o", orasOut)
			orasNarinfos, _ := filepath.Glob(filepath.Join(orasOut, "*.narinfo"))
			if len(orasNarinfos) != n {
				t.Errorf("oras pulled %d narinfos, want %d", len(orasNarinfos), n)
			}
			// Nix itself walks the whole closure through the pulled cache.
			paths := strings.Fields(testenv.Run(t, "nix", "path-info", "--store", "file://"+orasOut, "--recursive", root))
			if len(paths) != n {
				t.Errorf("nix path-info --recursive found %d paths in the oras-pulled cache, want %d", len(paths), n)
			}
			summary := run(t, "inspect", "--json", layout+":"+tc.tag)
			var s struct {
				Parts int               `json:"parts"`
				Paths []json.RawMessage `json:"paths"`
			}
			if err := json.Unmarshal([]byte(summary), &s); err != nil {
				t.Fatal(err)
			}
			if s.Parts != tc.parts || len(s.Paths) != n {
				t.Errorf("inspect: %d parts, %d paths; want %d, %d", s.Parts, len(s.Paths), tc.parts, n)
			}
		})
	}
}

// TestLargeClosureToRegistry pushes 2,000 generated paths to a real
// registry and pulls them back.
func TestLargeClosureToRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	c := newSynthCache(t)
	root, n := c.tree("reg", 20, 99)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	ref := reg.Ref("synth")
	run(t, "push", "--from-cache", c.url(), "--to", ref+":big", "--jobs", "16", root)
	out := t.TempDir()
	run(t, "pull", ref+":big", "--to", out)
	narinfos, _ := filepath.Glob(filepath.Join(out, "*.narinfo"))
	if len(narinfos) != n {
		t.Fatalf("pulled %d narinfos, want %d", len(narinfos), n)
	}
	manifest := oras(t, "manifest", "fetch", "--plain-http", ref+":big")
	if len(manifest) > spec.MaxManifestSize {
		t.Errorf("closure manifest is %d bytes", len(manifest))
	}
	if got := strconv.Itoa(n); !strings.Contains(manifest, `"dev.nixoci.path-count":"`+got+`"`) {
		t.Errorf("closure manifest does not count %s paths", got)
	}
}
