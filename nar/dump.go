package nar

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strings"

	gonar "github.com/nix-community/go-nix/pkg/nar"
)

// dumpBufferSize is the size of the buffer Dump puts in front of w: go-nix's
// writer issues one small Write per token.
const dumpBufferSize = 1 << 20

// ErrUnsupportedName: the tree holds an entry name Nix allows but go-nix's
// NAR writer cannot encode (a name starting with "..", such as "..data",
// which the writer takes for a step up the tree).
var ErrUnsupportedName = errors.New("nar: entry name not supported by the NAR writer")

// Dump serialises the file system tree at path (a directory, regular file or
// symlink, not followed) to w as a NAR, using go-nix's nar.DumpPath through a
// 1 MiB buffer that is flushed at the end.
func Dump(w io.Writer, path string) error {
	bw := bufio.NewWriterSize(w, dumpBufferSize)

	if err := gonar.DumpPath(bw, path); err != nil {
		if name := dotDotName(path); name != "" {
			return fmt.Errorf("%w: %s: names starting with \"..\" are valid in Nix, but go-nix's writer cannot encode them (%v)",
				ErrUnsupportedName, name, err)
		}

		return err
	}

	return bw.Flush()
}

// dotDotName returns the first entry below root whose name starts with ".."
// (and is longer), or "". It runs only after a failed dump, to explain it.
func dotDotName(root string) string {
	var found string

	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}

		if n := d.Name(); p != root && len(n) > 2 && strings.HasPrefix(n, "..") {
			found = p

			return fs.SkipAll
		}

		return nil
	})

	return found
}
