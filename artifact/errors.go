package artifact

import (
	"errors"

	"github.com/nixoci/nixoci/backend"
)

// Sentinel errors; failures wrap them with what was being handled.
var (
	// ErrNotArtifact: a manifest is not one nixoci wrote (or not of this
	// format version).
	ErrNotArtifact = errors.New("not a nixoci artifact")
	// ErrHashMismatch: content does not hash to what its metadata says
	// (the same error as backend.ErrHashMismatch).
	ErrHashMismatch = backend.ErrHashMismatch
)
