package image

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
)

// Source names a closure to make an image of: Ref, a tag or digest, in
// Target. Name names it in messages and in Image.Closures (default Ref):
// with closures from several targets, say which.
type Source struct {
	Target backend.Target
	Ref    string
	Name   string
}

func (s Source) name() string {
	if s.Name != "" {
		return s.Name
	}
	return s.Ref
}

// sourcesIn is refs, all in src.
func sourcesIn(src backend.Target, refs []string) []Source {
	out := make([]Source, len(refs))
	for i, r := range refs {
		out[i] = Source{Target: src, Ref: r}
	}
	return out
}

// narSources maps the NAR blob of each path of the images to a target
// holding it: that of a closure listing the path's artifact.
type narSources map[digest.Digest]backend.Target

func (s narSources) of(p artifact.PathArtifact) backend.Target { return s[p.NAR.Digest] }

// readClosures reads each closure and the artifacts of its paths, and
// the system they record.
func readClosures(ctx context.Context, sources []Source, jobs int) ([]closureRead, error) {
	if len(sources) == 0 {
		return nil, errors.New("no closure named")
	}
	var reads []closureRead
	for _, s := range sources {
		c, err := artifact.ReadClosure(ctx, s.Target, s.Ref)
		if err != nil {
			return nil, fmt.Errorf("closure %s: %w", s.name(), err)
		}
		ps, err := artifact.ClosurePaths(ctx, s.Target, c, max(jobs, artifact.DefaultNetworkJobs))
		if err != nil {
			return nil, fmt.Errorf("closure %s: %w", s.name(), err)
		}
		r := closureRead{ref: s.name(), src: s.Target, closure: c, paths: ps}
		r.system, r.systemErr = pathsSystem("closure "+r.ref, ps)
		reads = append(reads, r)
	}
	return reads, nil
}

// union merges closures: the roots of all, the digest of each, the
// descriptor of the first; a path in several closures once, in
// store-path order; srcs learns where their NARs are.
func union(reads []closureRead, srcs narSources) (*artifact.Closure, []artifact.PathArtifact) {
	merged := *reads[0].closure
	merged.Roots, merged.Digests = nil, nil
	byPath := map[string]artifact.PathArtifact{}
	for _, r := range reads {
		for _, p := range r.paths {
			byPath[p.Info.StorePath] = p
			if _, ok := srcs[p.NAR.Digest]; !ok {
				srcs[p.NAR.Digest] = r.src
			}
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
