package artifact_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// Synthetic store paths, shared with the other packages' tests.
var (
	nix32     = fixture.Nix32
	baseName  = fixture.BaseName
	storePath = fixture.StorePath
)

// closureCache is fixture.ClosureCache: app -> lib -> base, app -> data,
// app -> twin (twin's NAR is data's), and an unrelated path.
var (
	closureCache = fixture.ClosureCache
	openCache    = fixture.OpenCache
)

// fakePath is the artifact of a synthetic store path whose compressed NAR
// is identified by narSeed: paths with the same seed share a NAR blob. No
// NAR exists; only the metadata is consistent.
func fakePath(t testing.TB, name, narSeed string, refs ...string) artifact.PathArtifact {
	t.Helper()
	var refBases []string
	for _, r := range refs {
		refBases = append(refBases, baseName(r))
	}
	slices.Sort(refBases)
	file := []byte("compressed " + narSeed)
	info := &narinfo.NarInfo{
		StorePath:   storePath(name),
		URL:         spec.NarURL(nix32(file), spec.CompressionZstd),
		Compression: string(spec.CompressionZstd),
		FileHash:    "sha256:" + nix32(file),
		FileSize:    uint64(len(file)),
		NarHash:     "sha256:" + nix32([]byte("nar "+narSeed)),
		NarSize:     uint64(1000 + len(narSeed)),
		References:  refBases,
		Deriver:     baseName(name + ".drv"),
	}
	if refBases == nil {
		info.References = []string{}
	}
	art, _, _, err := artifact.NewPathArtifact(info)
	if err != nil {
		t.Fatalf("NewPathArtifact(%s): %v", name, err)
	}
	return art
}

// testKey is a deterministic signing key.
func testKey(name string) narinfo.SecretKey {
	seed := sha256.Sum256([]byte("nixoci test key " + name))
	return narinfo.SecretKey{Name: name, Key: ed25519.NewKeyFromSeed(seed[:])}
}

// readTree returns every regular file below dir by slash-separated
// relative path.
func readTree(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		files[filepath.ToSlash(rel)] = data
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
