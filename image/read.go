package image

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
)

// readClosures reads each closure and the artifacts of its paths, and
// the system they record.
func readClosures(ctx context.Context, src backend.Target, refs []string, jobs int) ([]closureRead, error) {
	if len(refs) == 0 {
		return nil, errors.New("no closure named")
	}
	var reads []closureRead
	for _, ref := range refs {
		c, err := artifact.ReadClosure(ctx, src, ref)
		if err != nil {
			return nil, fmt.Errorf("closure %s: %w", ref, err)
		}
		ps, err := artifact.ClosurePaths(ctx, src, c, max(jobs, artifact.DefaultNetworkJobs))
		if err != nil {
			return nil, fmt.Errorf("closure %s: %w", ref, err)
		}
		r := closureRead{ref: ref, closure: c, paths: ps}
		r.system, r.systemErr = pathsSystem("closure "+ref, ps)
		reads = append(reads, r)
	}
	return reads, nil
}

// union merges closures: the roots of all, the digest of each, the
// descriptor of the first; a path in several closures once, in
// store-path order.
func union(reads []closureRead) (*artifact.Closure, []artifact.PathArtifact) {
	merged := *reads[0].closure
	merged.Roots, merged.Digests = nil, nil
	byPath := map[string]artifact.PathArtifact{}
	for _, r := range reads {
		for _, p := range r.paths {
			byPath[p.Info.StorePath] = p
		}
		merged.Roots = append(merged.Roots, r.closure.Roots...)
		merged.Digests = append(merged.Digests, r.closure.Descriptor.Digest.String())
	}
	slices.Sort(merged.Roots)
	merged.Roots = slices.Compact(merged.Roots)
	paths := slices.SortedFunc(maps.Values(byPath), func(a, b artifact.PathArtifact) int {
		return strings.Compare(a.Info.StorePath, b.Info.StorePath)
	})
	return &merged, paths
}
