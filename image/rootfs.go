package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	gonar "github.com/nix-community/go-nix/pkg/nar"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/nar"
)

// rootEntry is one entry of the root layer.
type rootEntry struct {
	typ      byte
	mode     int64
	target   string // symlinks
	content  string // files
	uid, gid int    // owner; root but for home directories
}

// rootFS is the root layer being assembled: the first entry for a name
// wins, so generated files take precedence over links, and earlier link
// roots over later ones.
type rootFS map[string]rootEntry

func (r rootFS) add(name string, e rootEntry) {
	if _, ok := r[name]; !ok {
		r[name] = e
	}
}

func (r rootFS) dir(name string, mode int64) {
	r.add(name+"/", rootEntry{typ: tar.TypeDir, mode: mode})
}

// User is a user the image knows.
type User struct {
	Name     string
	UID, GID int
	Home     string
}

// newRootFS makes the fixed part: /etc/passwd and /etc/group with root
// and the given users (a group per gid not yet listed, named after its
// first user), each user's home owned by it, /tmp and /root.
func newRootFS(users []User) rootFS {
	r := rootFS{}
	passwd := "root:x:0:0:root:/root:/bin/sh\n"
	group := "root:x:0:\n"
	groups := map[int]bool{0: true}
	for _, u := range users {
		passwd += fmt.Sprintf("%s:x:%d:%d::%s:/bin/sh\n", u.Name, u.UID, u.GID, u.Home)
		if !groups[u.GID] {
			group += fmt.Sprintf("%s:x:%d:\n", u.Name, u.GID)
			groups[u.GID] = true
		}
		home := strings.TrimPrefix(path.Clean(u.Home), "/")
		for d := path.Dir(home); d != "."; d = path.Dir(d) {
			r.dir(d, 0o755)
		}
		r.add(home+"/", rootEntry{typ: tar.TypeDir, mode: 0o755, uid: u.UID, gid: u.GID})
	}
	r.dir("etc", 0o755)
	r.add("etc/passwd", rootEntry{typ: tar.TypeReg, mode: 0o644, content: passwd})
	r.add("etc/group", rootEntry{typ: tar.TypeReg, mode: 0o644, content: group})
	r.dir("tmp", 0o1777)
	r.dir("root", 0o700)
	return r
}

// linkRoot adds symlinks into a store path, as Nix's buildEnv would: for
// each top-level directory D of the path, /D/<entry> points to the
// path's D/<entry>; each top-level file F becomes /F.
func (r rootFS) linkRoot(storePath string, top []gonar.Header) {
	for _, h := range top {
		rel := strings.TrimPrefix(h.Path, "/")
		depth := strings.Count(rel, "/")
		switch {
		case depth == 0 && h.Type == gonar.TypeDirectory:
			r.dir(rel, 0o755)
		case depth == 0:
			r.add(rel, rootEntry{typ: tar.TypeSymlink, mode: 0o777, target: storePath + "/" + rel})
		case depth == 1:
			if e, ok := r[path.Dir(rel)+"/"]; ok && e.typ == tar.TypeDir {
				r.add(rel, rootEntry{typ: tar.TypeSymlink, mode: 0o777, target: storePath + "/" + rel})
			}
		}
	}
}

// has reports whether the root layer provides an absolute path.
func (r rootFS) has(p string) bool {
	name := strings.TrimPrefix(path.Clean(p), "/")
	_, f := r[name]
	_, d := r[name+"/"]
	return f || d
}

// tar writes the root layer, entries sorted (parents before children).
func (r rootFS) tar() ([]byte, error) {
	names := make([]string, 0, len(r))
	for n := range r {
		names = append(names, n)
	}
	sort.Strings(names)
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, n := range names {
		e := r[n]
		h := header(n, e.typ, e.mode)
		h.Uid, h.Gid = e.uid, e.gid
		h.Linkname = e.target
		h.Size = int64(len(e.content))
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := io.WriteString(tw, e.content); err != nil {
			return nil, err
		}
	}
	err := tw.Close()
	return b.Bytes(), err
}

// topEntries lists the nodes of a store path's NAR down to depth 2 (for
// /bin/hello), reading the NAR blob without writing anything.
func topEntries(ctx context.Context, src backend.Target, p artifact.PathArtifact) ([]gonar.Header, error) {
	var out []gonar.Header
	err := readNAR(ctx, src, p, func(r io.Reader) error {
		nr := nar.NewReader(r)
		for {
			h, err := nr.Next()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%s: %w", p.Info.StorePath, err)
			}
			if h.Path != "/" && strings.Count(h.Path, "/") <= 2 {
				out = append(out, *h)
			}
		}
	})
	return out, err
}
