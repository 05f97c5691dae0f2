package image

import (
	"archive/tar"
	"fmt"
	"io"
	"strings"
	"time"

	gonar "github.com/nix-community/go-nix/pkg/nar"

	"github.com/nixoci/nixoci/nar"
)

// Normalised tar metadata: what the Nix store itself records (mtime 1,
// read-only modes, no owners) and nothing that varies between machines.
var (
	entryTime = time.Unix(1, 0).UTC()
	// nix-snapshotter's mountpoint layer uses mtime 0.
	entryTimeZero = time.Unix(0, 0).UTC()
	// Parents shared by every store-path layer; identical in each.
	storeParents = []string{"nix/", "nix/store/"}
)

const (
	modeParent  = 0o755
	modeDir     = 0o555
	modeFile    = 0o444
	modeExec    = 0o555
	modeSymlink = 0o777
)

func header(name string, typ byte, mode int64) *tar.Header {
	return &tar.Header{
		Name: name, Typeflag: typ, Mode: mode, ModTime: entryTime,
		Format: tar.FormatPAX,
	}
}

// writeParents writes the directories every store-path layer shares,
// with modification time mtime.
func writeParents(tw *tar.Writer, mtime time.Time) error {
	for _, p := range storeParents {
		h := header(p, tar.TypeDir, modeParent)
		h.ModTime = mtime
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
	}
	return nil
}

// RootType is the type of a store path's top-level node.
type RootType string

const (
	RootDirectory RootType = "directory"
	RootRegular   RootType = "regular"
	RootSymlink   RootType = "symlink"
)

// writeNAR converts the NAR read from r, the content of storePath, into
// tar entries under storePath without its leading "/". The NAR is read
// with the strict reader: names that would escape their directory, and
// duplicate or unsorted entries, are errors before anything is written
// for them.
func writeNAR(tw *tar.Writer, storePath string, r io.Reader) (RootType, error) {
	prefix := strings.TrimPrefix(storePath, "/")
	nr := nar.NewReader(r)
	var root RootType
	for {
		h, err := nr.Next()
		if err == io.EOF {
			return root, nil
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", storePath, err)
		}
		name := prefix
		if h.Path != "/" {
			name += h.Path
		}
		var th *tar.Header
		switch h.Type {
		case gonar.TypeDirectory:
			th = header(name+"/", tar.TypeDir, modeDir)
		case gonar.TypeRegular:
			mode := int64(modeFile)
			if h.Executable {
				mode = modeExec
			}
			th = header(name, tar.TypeReg, mode)
			th.Size = h.Size
		case gonar.TypeSymlink:
			th = header(name, tar.TypeSymlink, modeSymlink)
			th.Linkname = h.LinkTarget
		default:
			return "", fmt.Errorf("%s: %s: unknown NAR node type %v", storePath, h.Path, h.Type)
		}
		if h.Path == "/" {
			root = RootType(h.Type.String())
		}
		if err := tw.WriteHeader(th); err != nil {
			return "", fmt.Errorf("%s: %s: %w", storePath, h.Path, err)
		}
		if h.Type == gonar.TypeRegular {
			if _, err := io.Copy(tw, nr); err != nil {
				return "", fmt.Errorf("%s: %s: %w", storePath, h.Path, err)
			}
		}
	}
}
