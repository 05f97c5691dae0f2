package artifact

import (
	"context"
	"errors"
	"path"

	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// unchanged reports whether tag already names exactly the closure this
// push would write, so that nothing needs writing: a version 2 closure of
// the same roots listing the same store paths, when the push adds no
// signature (no signing keys, and none in the source to merge into the
// stored narinfos), so that every stored path artifact would be reused as
// it is. That costs a request or two instead of one per path. The stored
// closure is complete (its tag was written last) and reaches every path
// it lists, so a garbage collector keeps them.
func (p *pusher) unchanged(ctx context.Context, roots []string, tag string, infos []*narinfo.NarInfo) (*PushResult, bool, error) {
	if len(p.opts.SignKeys) > 0 || p.opts.ClosureVersion == spec.Version {
		return nil, false, nil
	}
	want := make(map[string]bool, len(infos))
	for _, in := range infos {
		if len(in.Sigs) > 0 {
			return nil, false, nil
		}
		want[in.StorePath] = true
	}
	desc, data, err := backend.FetchManifest(ctx, p.dst, tag)
	if errors.Is(err, errdef.ErrNotFound) {
		return nil, false, nil
	} else if err != nil {
		return nil, false, err
	}
	c, err := ParseClosure(ctx, p.dst, tag, desc, data)
	if errors.Is(err, ErrNotArtifact) {
		return nil, false, nil // a push will tag over it
	} else if err != nil {
		return nil, false, err
	}
	if c.Version != spec.ClosureVersion || len(c.PathManifests) != len(want) {
		return nil, false, nil
	}
	arts := make([]PathArtifact, len(c.PathManifests))
	for i, d := range c.PathManifests {
		art, ok := PathFromEntry(d)
		if !ok || !want[art.Info.StorePath] {
			return nil, false, nil
		}
		arts[i] = art
	}
	ci, err := NewClosureIndex(roots, arts, path.Dir(roots[0]), p.opts.ManifestLimit)
	if err != nil || ci.Top.Descriptor.Digest != desc.Digest {
		return nil, false, nil
	}
	if pr := p.opts.Progress; pr != nil {
		pr.PathsTotal.Store(int64(len(arts)))
		pr.PathsDone.Store(int64(len(arts)))
		pr.PathsReused.Store(int64(len(arts)))
	}
	return &PushResult{Roots: roots, Tag: tag, Closure: desc, Paths: arts, Reused: len(arts), Parts: len(ci.Parts), Index: ci}, true, nil
}
