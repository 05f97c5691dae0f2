package image

// This file: which closures make which platform's image (SPEC.md
// section 8.5).

import (
	"fmt"
	"log/slog"
	"maps"
	"path"
	"runtime"
	"slices"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// closureRead is one closure as read from its source.
type closureRead struct {
	ref     string         // its name in messages
	src     backend.Target // where it and its paths' NARs are read from
	closure *artifact.Closure
	paths   []artifact.PathArtifact
	// system is the one system its paths record ("" if none); systemErr
	// is set instead when they record several.
	system    string
	systemErr error
}

// pathsSystem is the one system paths record, ignoring paths that
// record none and builtin (runs anywhere); "" if none records one. what
// names the paths in the error when they record several.
func pathsSystem(what string, paths []artifact.PathArtifact) (string, error) {
	bySystem := map[string]string{} // system -> first path recording it
	for _, p := range paths {
		s := p.Info.System
		if s == "" || s == spec.SystemBuiltin {
			continue
		}
		if _, ok := bySystem[s]; !ok {
			bySystem[s] = p.Info.StorePath
		}
	}
	switch len(bySystem) {
	case 0:
		return "", nil
	case 1:
		for s := range bySystem {
			return s, nil
		}
	}
	var parts []string
	for _, s := range slices.Sorted(maps.Keys(bySystem)) {
		parts = append(parts, s+" ("+path.Base(bySystem[s])+")")
	}
	return "", fmt.Errorf("%s: %w: %s", what, ErrMixedSystems, strings.Join(parts, ", "))
}

// plan is one image to make: the union of some closures, for one
// platform.
type plan struct {
	reads    []closureRead
	closure  *artifact.Closure // roots of all, digest of each
	paths    []artifact.PathArtifact
	system   string
	platform ocispec.Platform
}

// refs names the plan's closures in messages.
func (p *plan) refs() string {
	var refs []string
	for _, r := range p.reads {
		refs = append(refs, r.ref)
	}
	return strings.Join(refs, "+")
}

// groupUnion puts closures of one system into one image: all in one,
// unless they record several systems; then closures that record none
// cannot be placed.
func groupUnion(reads []closureRead) ([][]closureRead, error) {
	bySystem := map[string][]closureRead{}
	for _, r := range reads {
		bySystem[r.system] = append(bySystem[r.system], r)
	}
	delete(bySystem, "")
	if len(bySystem) < 2 {
		return [][]closureRead{reads}, nil
	}
	for _, r := range reads {
		if r.systemErr != nil {
			return nil, r.systemErr
		}
		if r.system == "" {
			return nil, fmt.Errorf("closure %s: %w, and the others are for %s", r.ref, ErrNoSystem, strings.Join(slices.Sorted(maps.Keys(bySystem)), ", "))
		}
	}
	var groups [][]closureRead
	for _, s := range slices.Sorted(maps.Keys(bySystem)) {
		groups = append(groups, bySystem[s])
	}
	return groups, nil
}

// groupEach makes one image of each closure; with several, each must
// record its own system.
func groupEach(reads []closureRead) ([][]closureRead, error) {
	if len(reads) == 1 {
		return [][]closureRead{reads}, nil
	}
	byDigest := map[string]string{}
	bySystem := map[string]string{}
	var groups [][]closureRead
	for _, r := range reads {
		d := r.closure.Descriptor.Digest.String()
		if other, ok := byDigest[d]; ok {
			return nil, fmt.Errorf("closures %s and %s (%s): %w", other, r.ref, d, ErrSameClosure)
		}
		byDigest[d] = r.ref
		if r.systemErr != nil {
			return nil, r.systemErr
		}
		if r.system == "" {
			return nil, fmt.Errorf("closure %s: %w, so its platform is unknown", r.ref, ErrNoSystem)
		}
		if other, ok := bySystem[r.system]; ok {
			return nil, fmt.Errorf("closures %s and %s are both %s: %w", other, r.ref, r.system, ErrSameSystem)
		}
		bySystem[r.system] = r.ref
		groups = append(groups, []closureRead{r})
	}
	return groups, nil
}

// newPlans merges each group of closures into the plan of one image,
// and says where each path's NAR is read from.
func newPlans(groups [][]closureRead) ([]*plan, narSources) {
	var plans []*plan
	srcs := narSources{}
	for _, g := range groups {
		p := &plan{reads: g}
		p.closure, p.paths = union(g, srcs)
		plans = append(plans, p)
	}
	return plans, srcs
}

// choosePlatforms sets each plan's platform and keeps the plans of the
// platforms asked for (all if none), in index order. One image takes
// the one platform asked for, whatever its paths record (a
// cross-compiled closure records its build machine's system), else its
// system's, else the host's. Several images take their systems'.
func choosePlatforms(plans []*plan, want []ocispec.Platform) ([]*plan, error) {
	if len(plans) == 1 {
		p := plans[0]
		sys, sysErr := pathsSystem("closure "+p.refs(), p.paths)
		p.system = sys
		switch {
		case len(want) > 1:
			return nil, &OptionError{"Platforms", platformList(want), "one image has one platform; several are for closures of several systems"}
		case len(want) == 1:
			p.platform = want[0]
			if sysErr != nil {
				slog.Warn("labelling an image of mixed systems as asked", "platform", spec.PlatformString(want[0]), "err", sysErr)
			} else if pl, err := spec.SystemPlatform(sys); sys != "" && (err != nil || !matches(want[0], pl)) {
				slog.Warn("labelling an image with another platform than its system's, as asked", "closure", p.refs(), "system", sys, "platform", spec.PlatformString(want[0]))
			}
		case sysErr != nil:
			return nil, sysErr
		case sys == "":
			p.platform = ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
			slog.Warn("no path of the closure records its system; the image is labelled with this machine's platform",
				"closure", p.refs(), "platform", spec.PlatformString(p.platform))
		default:
			pl, err := spec.SystemPlatform(sys)
			if err != nil {
				return nil, fmt.Errorf("closure %s: %w", p.refs(), err)
			}
			p.platform = pl
		}
		return plans, nil
	}
	for _, p := range plans {
		p.system = p.reads[0].system
		pl, err := spec.SystemPlatform(p.system)
		if err != nil {
			return nil, fmt.Errorf("closure %s: %w", p.refs(), err)
		}
		p.platform = pl
	}
	kept := plans
	if len(want) > 0 {
		kept = nil
		for _, w := range want {
			i := slices.IndexFunc(plans, func(p *plan) bool { return matches(w, p.platform) })
			if i < 0 {
				var have []ocispec.Platform
				for _, p := range plans {
					have = append(have, p.platform)
				}
				return nil, fmt.Errorf("%s: %w (the closures are for %s)", spec.PlatformString(w), ErrNoSuchPlatform, platformList(have))
			}
			if !slices.Contains(kept, plans[i]) {
				kept = append(kept, plans[i])
			}
		}
	}
	slices.SortFunc(kept, func(a, b *plan) int { return spec.ComparePlatforms(a.platform, b.platform) })
	return kept, nil
}

// matches reports whether a platform asked for names have; a variant
// left out matches any.
func matches(want, have ocispec.Platform) bool {
	return want.OS == have.OS && want.Architecture == have.Architecture && (want.Variant == "" || want.Variant == have.Variant)
}

func platformList(ps []ocispec.Platform) string {
	var s []string
	for _, p := range ps {
		s = append(s, spec.PlatformString(p))
	}
	return strings.Join(s, ", ")
}
