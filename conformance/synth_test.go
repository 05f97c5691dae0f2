package conformance

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	gonar "github.com/nix-community/go-nix/pkg/nar"

	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// synthCache writes binary caches of generated store paths, for closures
// larger or stranger than building them with Nix would allow in a test.
type synthCache struct {
	t   testing.TB
	dir string
}

func newSynthCache(t testing.TB) *synthCache {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "nar"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nix-cache-info"), []byte(spec.CacheInfo("/nix/store", spec.DefaultPriority)), 0o644); err != nil {
		t.Fatal(err)
	}
	return &synthCache{t: t, dir: dir}
}

func (c *synthCache) url() string { return "file://" + c.dir }

// synthStorePath makes a valid store path whose hash derives from name.
var synthStorePath = fixture.StorePath

// fileNAR is the NAR of a single regular file.
func fileNAR(t testing.TB, content string) []byte {
	var b bytes.Buffer
	w, err := gonar.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteHeader(&gonar.Header{Path: "/", Type: gonar.TypeRegular, Size: int64(len(content))}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func nix32sha256(data []byte) string { return "sha256:" + fixture.Nix32(data) }

// add stores an uncompressed NAR for storePath with the given references
// (base names) and returns its narinfo; edit may change the narinfo text
// before it is written.
func (c *synthCache) add(storePath string, nar []byte, refs []string, edit func(string) string) *narinfo.NarInfo {
	c.t.Helper()
	h := nix32sha256(nar)
	info := &narinfo.NarInfo{
		StorePath: storePath, URL: "nar/" + strings.TrimPrefix(h, "sha256:") + ".nar", Compression: "none",
		FileHash: h, FileSize: uint64(len(nar)), NarHash: h, NarSize: uint64(len(nar)), References: refs,
	}
	text, err := info.Format()
	if err != nil {
		c.t.Fatal(err)
	}
	s := string(text)
	if edit != nil {
		s = edit(s)
	}
	if err := os.WriteFile(filepath.Join(c.dir, info.URL), nar, 0o644); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, spec.PathTag(storePath)+".narinfo"), []byte(s), 0o644); err != nil {
		c.t.Fatal(err)
	}
	return info
}

// tree adds a closure of 1 + fanout + fanout*leaves paths and returns
// its root and size.
func (c *synthCache) tree(prefix string, fanout, leaves int) (string, int) {
	var mids []string
	for i := range fanout {
		var refs []string
		for j := range leaves {
			p := synthStorePath(fmt.Sprintf("%s-leaf-%d-%d", prefix, i, j))
			c.add(p, fileNAR(c.t, p), nil, nil)
			refs = append(refs, filepath.Base(p))
		}
		m := synthStorePath(fmt.Sprintf("%s-mid-%d", prefix, i))
		c.add(m, fileNAR(c.t, m), refs, nil)
		mids = append(mids, filepath.Base(m))
	}
	root := synthStorePath(prefix + "-root")
	c.add(root, fileNAR(c.t, root), mids, nil)
	return root, 1 + fanout + fanout*leaves
}
