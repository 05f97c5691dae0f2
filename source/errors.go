package source

import (
	"errors"

	"github.com/nixoci/nixoci/backend"
)

// Sentinel errors; failures wrap them with what was being handled.
var (
	// ErrNotInStore: an argument is not a store path.
	ErrNotInStore = errors.New("not in the Nix store")
	// ErrNotInCache: a binary cache has no narinfo (or NAR) for a store
	// path.
	ErrNotInCache = errors.New("not in binary cache")
	// ErrHashMismatch: a NAR is not what its metadata says (the same
	// error as backend.ErrHashMismatch and artifact.ErrHashMismatch).
	ErrHashMismatch = backend.ErrHashMismatch
)
