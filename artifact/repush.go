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
//
// stored is what tag names in the target (storedClosure), read while the
// source listed the closure.
func (p *pusher) unchanged(roots []string, tag string, infos []*narinfo.NarInfo, stored func() (*Closure, error)) (*PushResult, bool, error) {
	if !p.mayBeUnchanged() || len(p.files) > 0 {
		// Files may add to what is stored (signatures merged into stored
		// realisations): written every time.
		return nil, false, nil
	}
	want := make(map[string]bool, len(infos))
	for _, in := range infos {
		if len(in.Sigs) > 0 {
			return nil, false, nil
		}
		want[in.StorePath] = true
	}
	c, err := stored()
	if err != nil || c == nil {
		return nil, false, err
	}
	desc := c.Descriptor
	if c.Version != spec.ClosureV2 || len(c.Members) != len(want) {
		return nil, false, nil
	}
	arts := make([]PathArtifact, len(c.Members))
	for i, m := range c.Members {
		if m.Path == nil || !want[m.StorePath] {
			return nil, false, nil
		}
		arts[i] = *m.Path
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

// mayBeUnchanged: a push with these options may find its closure stored
// as it is (see unchanged).
func (p *pusher) mayBeUnchanged() bool {
	return len(p.opts.SignKeys) == 0 && p.opts.ClosureVersion != spec.Version
}

// storedClosure starts reading the closure tag names in the target and
// returns a function that waits for it: nil if the tag names nothing or
// something else than a closure (a push tags over it). With a registry
// far away, its round trips run while the source lists the closure.
func (p *pusher) storedClosure(ctx context.Context, tag string) func() (*Closure, error) {
	type result struct {
		c   *Closure
		err error
	}
	done := make(chan result, 1)
	go func() {
		desc, data, err := backend.FetchManifest(ctx, p.dst, tag)
		if errors.Is(err, errdef.ErrNotFound) {
			done <- result{}
			return
		} else if err != nil {
			done <- result{err: err}
			return
		}
		c, err := ParseClosure(ctx, p.dst, tag, desc, data)
		if errors.Is(err, ErrNotArtifact) {
			err = nil
		}
		done <- result{c, err}
	}()
	return func() (*Closure, error) {
		r := <-done
		return r.c, r.err
	}
}
