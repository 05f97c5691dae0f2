package backend_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/internal/testenv"
)

// TestTagsBeyondOneMetadataLimit lists a repository whose tag list is
// over 4 MiB (oras-go's bound on one page, which docker-registry 2.8,
// ignoring the page size, answers whole) on both registries, serving the
// same storage: every tag exactly once, in batches of at most TagBatch,
// in the pages the registry makes (2.8: one; v3: one per TagPageSize
// tags).
func TestTagsBeyondOneMetadataLimit(t *testing.T) {
	const many = 36_000 // of 120 characters: 4.4 MB of tag list
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	storage := memDir(t)
	var want []string
	for _, tc := range []struct {
		program string
		pages   int
	}{
		{"docker-registry", 1},
		{"registry", (many + 1 + backend.TagPageSize - 1) / backend.TagPageSize},
	} {
		t.Run(tc.program, func(t *testing.T) {
			reg := testenv.StartRegistry(t, testenv.RegistryOptions{Program: tc.program, StorageDir: storage})
			proxy := testenv.StartFaultProxy(t, reg.Addr, testenv.FaultOptions{})
			tgt := open(t, proxy.Ref("many"))
			if want == nil {
				want = tagInBulk(t, reg, tgt, "many", many)
			}
			seen := map[string]int{}
			if err := tgt.Tags(t.Context(), "", func(batch []string) error {
				if len(batch) == 0 || len(batch) > backend.TagBatch {
					t.Errorf("a batch of %d tags, want 1 to %d", len(batch), backend.TagBatch)
				}
				for _, tag := range batch {
					seen[tag]++
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if len(seen) != len(want) {
				t.Errorf("listed %d distinct tags, want %d", len(seen), len(want))
			}
			for _, tag := range want {
				if seen[tag] != 1 {
					t.Fatalf("tag %s listed %d times, want 1", tag, seen[tag])
				}
			}
			pages := 0
			for _, r := range proxy.Log() {
				if strings.HasSuffix(r.Path, "/tags/list") {
					pages++
				}
			}
			if pages != tc.pages {
				t.Errorf("%d tag list requests, want %d", pages, tc.pages)
			}
		})
	}
}

// tagInBulk pushes one manifest to repo, tagged "seed", and gives it n
// more tags of 120 characters the quick way: in the registry's storage,
// as distribution's filesystem driver keeps a tag (a directory per tag
// holding the link to its manifest; listing reads the directory names).
// It returns every tag.
func tagInBulk(t *testing.T, reg *testenv.Registry, tgt backend.Target, repo string, n int) []string {
	t.Helper()
	config := []byte("{}")
	cd := ocispec.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: digest.FromBytes(config), Size: int64(len(config))}
	if err := tgt.Push(t.Context(), cd, strings.NewReader(string(config))); err != nil {
		t.Fatal(err)
	}
	manifest := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":%q,"digest":%q,"size":%d},"layers":[]}`, cd.MediaType, cd.Digest, cd.Size))
	md := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(manifest), Size: int64(len(manifest))}
	if err := tgt.PushReference(t.Context(), md, strings.NewReader(string(manifest)), "seed"); err != nil {
		t.Fatal(err)
	}
	tagsDir := filepath.Join(reg.Dir, "docker/registry/v2/repositories", repo, "_manifests/tags")
	link, err := os.ReadFile(filepath.Join(tagsDir, "seed/current/link"))
	if err != nil {
		t.Fatalf("the registry does not keep tags as expected: %v", err)
	}
	tags := []string{"seed"}
	for i := range n {
		tag := fmt.Sprintf("t%0119d", i)
		dir := filepath.Join(tagsDir, tag, "current")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "link"), link, 0o644); err != nil {
			t.Fatal(err)
		}
		tags = append(tags, tag)
	}
	return tags
}

// memDir is a new directory in memory (/dev/shm) where there is one, else
// t.TempDir(): tens of thousands of tag directories are made and removed
// in a second there, in a minute on a busy disk. Cleanup removes it.
func memDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "nixoci-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
