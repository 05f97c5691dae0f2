package artifact

import (
	"errors"
	"fmt"

	"github.com/nixoci/nixoci/backend"
)

// Sentinel errors; failures wrap them with what was being handled.
var (
	// ErrNotArtifact: a manifest is not one nixoci wrote (or not of this
	// format version).
	ErrNotArtifact = errors.New("not a nixoci artifact")
	// ErrClaimMismatch: an artifact is not what the reference that led to
	// it claims (a tag or closure entry naming a manifest that holds
	// another store path, an entry whose narinfo is another path's). A
	// registry holds it, so a server answers it as a backend failure
	// (5xx), never as absence.
	ErrClaimMismatch = errors.New("artifact is not what it was claimed to be")
	// ErrNotClosure: a manifest is not a nixoci closure or store path at
	// all (another tool's artifact, an image); it is an ErrNotArtifact.
	ErrNotClosure = fmt.Errorf("%w: not a closure", ErrNotArtifact)
	// ErrTooLarge: a closure lists more paths or parts than the reader's
	// bound (ClosureReader).
	ErrTooLarge = errors.New("closure over the reader's bound")
	// ErrVanished: a path a writer relied on being stored was deleted (by
	// a garbage collection) with its NAR blob, so it cannot be stored
	// again from what the target holds.
	ErrVanished = errors.New("deleted, with its NAR blob, while the write ran")
	// ErrHashMismatch: content does not hash to what its metadata says
	// (the same error as backend.ErrHashMismatch).
	ErrHashMismatch = backend.ErrHashMismatch
)
