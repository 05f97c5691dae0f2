package artifact

import (
	"context"
	"fmt"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/backend"
)

// GuardedClosure is a closure written by StoreClosureGuarded: of paths
// dst holds already, with roots, tagged Tag, with a push record made as
// Record says.
type GuardedClosure struct {
	Roots  []string
	Paths  []PathArtifact
	Tag    string
	Record RecordOptions
}

// StoreClosureGuarded stores c's closure (tag last) and its push record
// in dst as a push does while a garbage collector may delete at the same
// time (SPEC.md section 10.3, step 4): before writing the closure and
// after tagging it, it reads the collector's marker, and if a collector
// may have deleted anything since began (when the writer began relying
// on the paths being stored) it checks every path and stores again one
// that vanished from its NAR blob (a registry's collection deletes
// manifests, not blobs), then the closure once more. A path whose NAR
// blob is gone too cannot be restored: an error wrapping ErrVanished
// names it.
func StoreClosureGuarded(ctx context.Context, dst backend.Target, began time.Time, c GuardedClosure) (ocispec.Descriptor, error) {
	g := gcGuard{dst: dst, start: began}
	if check, _, err := g.overlap(ctx); err != nil {
		return ocispec.Descriptor{}, err
	} else if check {
		if err := restoreFromBlobs(ctx, dst, c.Paths); err != nil {
			return ocispec.Descriptor{}, err
		}
	}
	desc, _, err := StoreClosure(ctx, dst, c.Roots, c.Paths, c.Tag, "")
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if _, err := StorePushRecord(ctx, dst, desc, c.Tag, c.Record); err != nil {
		return desc, fmt.Errorf("closure %s tagged, but %w", c.Tag, err)
	}
	check, err := g.afterTag(ctx)
	if err != nil || !check {
		return desc, err
	}
	if err := restoreFromBlobs(ctx, dst, c.Paths); err != nil {
		return desc, err
	}
	// What the closure names is stored again: so is the closure, in case
	// the collection took part of it.
	desc, _, err = StoreClosure(ctx, dst, c.Roots, c.Paths, c.Tag, "")
	return desc, err
}

// restoreFromBlobs stores again, from its NAR blob, each of paths not
// intact in dst.
func restoreFromBlobs(ctx context.Context, dst backend.Target, paths []PathArtifact) error {
	for _, p := range paths {
		ok, err := pathIntact(ctx, dst, p)
		if err != nil {
			return err
		}
		if ok {
			continue
		}
		if ok, err := dst.Exists(ctx, p.NAR); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%s: %w", p.Info.StorePath, ErrVanished)
		}
		info := *p.Info
		if _, err := StoreArtifact(ctx, dst, &info, nil); err != nil {
			return fmt.Errorf("%s: storing again what a garbage collection deleted: %w", p.Info.StorePath, err)
		}
	}
	return nil
}
