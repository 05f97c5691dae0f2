package nar

import (
	"bufio"
	"io"

	gonar "github.com/nix-community/go-nix/pkg/nar"
)

// dumpBufferSize is the size of the buffer Dump puts in front of w: go-nix's
// writer issues one small Write per token.
const dumpBufferSize = 1 << 20

// Dump serialises the file system tree at path (a directory, regular file or
// symlink, not followed) to w as a NAR, using go-nix's nar.DumpPath through a
// 1 MiB buffer that is flushed at the end.
func Dump(w io.Writer, path string) error {
	bw := bufio.NewWriterSize(w, dumpBufferSize)

	if err := gonar.DumpPath(bw, path); err != nil {
		return err
	}

	return bw.Flush()
}
