package image

import (
	"errors"
	"fmt"

	"github.com/nixoci/nixoci/spec"
)

// Sentinel errors; failures wrap them with the closure, path or option
// they concern.
var (
	// ErrOutsideClosure: an entrypoint or link root is not in the closure.
	ErrOutsideClosure = errors.New("not in the closure")
	// ErrManifestTooLarge: the image manifest would be larger than
	// registries must accept (spec.MaxManifestSize); fewer layers
	// (Options.MaxLayers) make it smaller.
	ErrManifestTooLarge = errors.New("image manifest too large")
	// ErrMixedSystems: the paths of a closure (or of closures merged into
	// one image) record different systems.
	ErrMixedSystems = errors.New("paths record different systems")
	// ErrNoSystem: among closures of several systems, one whose paths
	// record no system, so its platform is unknown.
	ErrNoSystem = errors.New("no path records its system")
	// ErrSameSystem: two closures meant for an index of platforms record
	// the same system.
	ErrSameSystem = errors.New("two closures of one system")
	// ErrSameClosure: a closure was given twice.
	ErrSameClosure = errors.New("closure given twice")
	// ErrNoSuchPlatform: a platform asked for (Options.Platforms) that no
	// closure is for.
	ErrNoSuchPlatform = errors.New("no closure for the platform")
	// ErrNoPlatform: a closure's system has no OCI platform (darwin, or
	// missing from the table of SPEC.md section 8.5).
	ErrNoPlatform = spec.ErrNoPlatform
)

// OptionError reports an Options field that Build cannot use.
type OptionError struct {
	Option string // the field, e.g. "User"
	Value  string // as messages show it: quoted if a string
	Reason string
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("image: %s %s: %s", e.Option, e.Value, e.Reason)
}
