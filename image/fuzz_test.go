package image

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"io"
	"strings"
	"testing"

	gonar "github.com/nix-community/go-nix/pkg/nar"
)

func tokens(ts ...string) []byte {
	var b bytes.Buffer
	for _, s := range ts {
		binary.Write(&b, binary.LittleEndian, uint64(len(s)))
		b.WriteString(s)
		b.Write(make([]byte, (8-len(s)%8)%8))
	}
	return b.Bytes()
}

func validNAR(t testing.TB) []byte {
	var b bytes.Buffer
	w, _ := gonar.NewWriter(&b)
	for _, h := range []gonar.Header{
		{Path: "/", Type: gonar.TypeDirectory},
		{Path: "/bin", Type: gonar.TypeDirectory},
		{Path: "/bin/app", Type: gonar.TypeRegular, Size: 5, Executable: true},
		{Path: "/bin/sh", Type: gonar.TypeSymlink, LinkTarget: "app"},
		{Path: "/share", Type: gonar.TypeRegular, Size: 3},
	} {
		if err := w.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			w.Write(bytes.Repeat([]byte("x"), int(h.Size)))
		}
	}
	w.Close()
	return b.Bytes()
}

const fuzzStorePath = "/nix/store/00000000000000000000000000000000-fuzz"

// FuzzWriteNAR: whatever NAR comes in, the tar that comes out stays under
// its store path, has no dot segments or duplicate names, and holds
// exactly the bytes it declares.
func FuzzWriteNAR(f *testing.F) {
	f.Add(validNAR(f))
	f.Add(tokens("nix-archive-1", "(", "type", "regular", "contents", "hi", ")"))
	f.Add(tokens("nix-archive-1", "(", "type", "symlink", "target", "/etc/passwd", ")"))
	f.Add(tokens("nix-archive-1", "(", "type", "directory", "entry", "(", "name", "..", "node", "(", "type", "regular", "contents", "x", ")", ")", ")"))
	f.Add(tokens("nix-archive-1", "(", "type", "directory", "entry", "(", "name", "a/b", "node", "(", "type", "regular", "contents", "x", ")", ")", ")"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		tw := tar.NewWriter(&out)
		if _, err := writeNAR(tw, fuzzStorePath, bytes.NewReader(data)); err != nil {
			return
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		prefix := strings.TrimPrefix(fuzzStorePath, "/")
		seen := map[string]bool{}
		tr := tar.NewReader(&out)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("reading our own tar: %v", err)
			}
			name := strings.TrimSuffix(h.Name, "/")
			if name != prefix && !strings.HasPrefix(name, prefix+"/") {
				t.Fatalf("entry %q outside %s", h.Name, prefix)
			}
			for _, c := range strings.Split(name, "/") {
				if c == "" || c == "." || c == ".." {
					t.Fatalf("entry %q has a %q component", h.Name, c)
				}
			}
			if seen[name] {
				t.Fatalf("duplicate entry %q", h.Name)
			}
			seen[name] = true
			n, err := io.Copy(io.Discard, tr)
			if err != nil || n != h.Size {
				t.Fatalf("entry %q: %d bytes of %d: %v", h.Name, n, h.Size, err)
			}
			if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(entryTime) {
				t.Fatalf("entry %q: metadata not normalised", h.Name)
			}
		}
	})
}
