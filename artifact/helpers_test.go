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
	makeNAR   = fixture.NAR
	compress  = fixture.Compress
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

// testCache builds a file:// binary cache directory the way
// `nix copy --to file://` lays it out.
type testCache struct {
	t     testing.TB
	dir   string
	infos map[string]*narinfo.NarInfo // by store path
}

func newTestCache(t testing.TB) *testCache {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "cache")
	if err := os.MkdirAll(filepath.Join(dir, "nar"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nix-cache-info"), []byte(spec.CacheInfo("/nix/store", spec.DefaultPriority)), 0o644); err != nil {
		t.Fatal(err)
	}
	return &testCache{t: t, dir: dir, infos: map[string]*narinfo.NarInfo{}}
}

func (c *testCache) url() string { return "file://" + c.dir }

// add stores a path named name, whose NAR is makeNAR(content), compressed
// with comp and referencing the paths named refs.
func (c *testCache) add(name, content string, comp spec.Compression, refs ...string) *narinfo.NarInfo {
	c.t.Helper()
	nar := makeNAR(c.t, content)
	return c.addFile(name, nar, compress(c.t, nar, comp), comp, refs...)
}

// addFile stores name with the given NAR and compressed file; the narinfo
// describes both truthfully.
func (c *testCache) addFile(name string, nar, file []byte, comp spec.Compression, refs ...string) *narinfo.NarInfo {
	c.t.Helper()
	var refBases []string
	for _, r := range refs {
		refBases = append(refBases, baseName(r))
	}
	slices.Sort(refBases)
	if refBases == nil {
		refBases = []string{}
	}
	info := &narinfo.NarInfo{
		StorePath:   storePath(name),
		URL:         spec.NarURL(nix32(file), comp),
		Compression: string(comp),
		FileHash:    "sha256:" + nix32(file),
		FileSize:    uint64(len(file)),
		NarHash:     "sha256:" + nix32(nar),
		NarSize:     uint64(len(nar)),
		References:  refBases,
		Deriver:     baseName(name + ".drv"),
		System:      "x86_64-linux",
	}
	c.write(info.URL, file)
	c.writeInfo(info)
	return info
}

func (c *testCache) write(rel string, data []byte) {
	c.t.Helper()
	p := filepath.Join(c.dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		c.t.Fatal(err)
	}
}

// writeInfo writes (or rewrites) the narinfo of info.
func (c *testCache) writeInfo(info *narinfo.NarInfo) {
	c.t.Helper()
	data, err := info.Format()
	if err != nil {
		c.t.Fatal(err)
	}
	c.write(info.HashPart()+".narinfo", data)
	c.infos[info.StorePath] = info
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
