package artifact

import "errors"

// Sentinel errors; failures wrap them with what was being handled.
var (
	// ErrNotArtifact: a manifest is not one nixoci wrote (or not of this
	// format version).
	ErrNotArtifact = errors.New("not a nixoci artifact")
	// ErrHashMismatch: content does not hash to what its metadata says.
	ErrHashMismatch = errors.New("hash mismatch")
	// ErrNotInStore: an argument is not a store path.
	ErrNotInStore = errors.New("not in the Nix store")
)
