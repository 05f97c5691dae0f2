package artifact_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"os"
	"path/filepath"
	"slices"
	"testing"

	gonar "github.com/nix-community/go-nix/pkg/nar"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/codec"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// nix32 is the nix-base32 encoding of a SHA-256 digest.
func nix32(data []byte) string {
	sum := sha256.Sum256(data)
	return nixbase32.EncodeToString(sum[:])
}

// baseName is a valid store path base name for name: a 32-character
// nix-base32 hash derived from name, "-", name.
func baseName(name string) string {
	sum := sha256.Sum256([]byte("store path " + name))
	return nixbase32.EncodeToString(sum[:20]) + "-" + name
}

// storePath is the store path of name in /nix/store.
func storePath(name string) string { return "/nix/store/" + baseName(name) }

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

// makeNAR serialises a small tree (a directory with an executable, a data
// file and a symlink) whose file contents are derived from content.
func makeNAR(t testing.TB, content string) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := gonar.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	run := "#!/bin/sh\necho " + content + "\n"
	data := content + "\n" + string(bytes.Repeat([]byte(content), 50))
	for _, h := range []struct {
		hdr  gonar.Header
		body string
	}{
		{gonar.Header{Path: "/", Type: gonar.TypeDirectory}, ""},
		{gonar.Header{Path: "/bin", Type: gonar.TypeDirectory}, ""},
		{gonar.Header{Path: "/bin/run", Type: gonar.TypeRegular, Executable: true, Size: int64(len(run))}, run},
		{gonar.Header{Path: "/data", Type: gonar.TypeRegular, Size: int64(len(data))}, data},
		{gonar.Header{Path: "/link", Type: gonar.TypeSymlink, LinkTarget: "data"}, ""},
	} {
		if err := w.WriteHeader(&h.hdr); err != nil {
			t.Fatal(err)
		}
		if h.body != "" {
			if _, err := w.Write([]byte(h.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func compress(t testing.TB, data []byte, c spec.Compression) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := codec.NewWriter(&b, c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
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
	if err := os.WriteFile(filepath.Join(dir, "nix-cache-info"), []byte(spec.CacheInfo("/nix/store")), 0o644); err != nil {
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
