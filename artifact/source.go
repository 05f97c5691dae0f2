package artifact

import (
	"context"
	"io"

	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// Source is where Push reads store paths from; package source has the
// local Nix store and binary caches.
type Source interface {
	// ResolveRoot turns a user's argument into a store path.
	ResolveRoot(arg string) (string, error)
	// Closure returns the metadata of every store path in the closure of
	// roots: at least StorePath, NarHash, NarSize and References. Fields
	// describing a compressed file (FileHash, FileSize, URL, Compression)
	// are set only by sources that store NARs already compressed.
	Closure(ctx context.Context, roots []string) ([]*narinfo.NarInfo, error)
	// WriteNAR writes the path's compressed NAR to w, checking it against
	// info, and returns the compression used.
	WriteNAR(ctx context.Context, info *narinfo.NarInfo, w io.Writer) (spec.Compression, error)
	// String names the source in messages.
	String() string
}

// FileSource is a Source that also has files of a closure's paths
// beyond their NARs (SPEC.md section 12): realisations of
// content-addressed derivations' outputs, build logs. Push stores them
// and lists them in the closure (section 12.6).
type FileSource interface {
	// Files returns the files of the paths of infos (a closure, as
	// Closure returned it), each naming the path it belongs to;
	// realisations as Realisation (Push signs them and merges them with
	// what the target holds).
	Files(ctx context.Context, infos []*narinfo.NarInfo) ([]ClosureFile, error)
}
