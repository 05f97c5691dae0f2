package artifact

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// gcGuard keeps a push or copy safe from a garbage collector that
// deletes, at the same time, what it reuses (SPEC.md section 10.3, step
// 4): before writing a closure and after tagging it, the writer reads the
// collector's marker; if a collector may have deleted anything since the
// write began, the writer checks what it reused and stores again what
// vanished. Without a collector this costs one request at each point.
type gcGuard struct {
	dst   backend.Target
	start time.Time
}

func newGCGuard(dst backend.Target) gcGuard { return gcGuard{dst: dst, start: time.Now()} }

// overlap reports whether a collector may have deleted something since
// the write began (it runs, or finished after the write began), and
// whether it still runs.
func (g gcGuard) overlap(ctx context.Context) (check, running bool, err error) {
	m, ok, err := ReadGCMarker(ctx, g.dst)
	if errors.Is(err, ErrNotArtifact) {
		slog.Warn("the gc marker tag names something else; checking what was reused", "target", g.dst, "err", err)
		return true, false, nil
	}
	if err != nil || !ok {
		return false, false, err
	}
	if m.Running(time.Now()) {
		return true, true, nil
	}
	return !m.Finished.IsZero() && !m.Finished.Before(g.start.Add(-spec.GCClockMargin)), false, nil
}

// afterTag is overlap once the closure is tagged: if a collector still
// runs, it waits spec.GCBatch, so that every batch of deletions begun
// before the tag has ended, and then reports that the closure must be
// checked.
func (g gcGuard) afterTag(ctx context.Context) (bool, error) {
	check, running, err := g.overlap(ctx)
	if err != nil || !check {
		return false, err
	}
	if running {
		slog.Info("a garbage collection is running: checking the closure once its current deletions are done", "target", g.dst, "wait", spec.GCBatch)
		t := time.NewTimer(spec.GCBatch)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	return true, nil
}

// deletesBlobs reports whether nixoci gc deletes blobs of t itself (an
// image layout) rather than only manifests (a registry, whose blobs only
// its own garbage collection frees, offline).
func deletesBlobs(t backend.Target) bool {
	_, ok := t.(*backend.Layout)
	return ok
}

// pathIntact reports whether art is stored whole in t: its tag names it
// or its manifest exists, and, where a collector deletes blobs, its
// manifest and blobs exist.
func pathIntact(ctx context.Context, t backend.Target, art PathArtifact) (bool, error) {
	cur, err := t.Resolve(ctx, spec.PathTag(art.Info.StorePath))
	if errors.Is(err, errdef.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	var check []ocispec.Descriptor
	if deletesBlobs(t) {
		check = []ocispec.Descriptor{art.Manifest, art.NAR, art.NarInfo}
	} else if cur.Digest != art.Manifest.Digest {
		check = []ocispec.Descriptor{art.Manifest}
	}
	for _, d := range check {
		if ok, err := t.Exists(ctx, d); err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// gcCheckPaths is run before a push writes its closure: if a collector
// may have deleted something since the push began, every path is checked
// and stored again if it vanished.
func (p *pusher) gcCheckPaths(ctx context.Context, g gcGuard, infos []*narinfo.NarInfo, res *PushResult) error {
	check, _, err := g.overlap(ctx)
	if err != nil || !check {
		return err
	}
	return p.restorePaths(ctx, infos, res)
}

// gcAttempts bounds how often a step is tried when a collector keeps
// deleting under it (collections back to back with no grace period).
const gcAttempts = 3

// retryAfterGC reports whether a step that failed with err is worth
// trying again: a collector may have deleted something since g began.
func retryAfterGC(ctx context.Context, g gcGuard, err error, attempt int, what string, dst backend.Target) bool {
	if err == nil || attempt >= gcAttempts || ctx.Err() != nil {
		return false
	}
	if check, _, gerr := g.overlap(ctx); gerr != nil || !check {
		return false
	}
	slog.Info(what+" failed while a garbage collection ran; storing again what it deleted", "target", dst, "attempt", attempt, "err", err)
	return true
}

// pushPathsGuarded is pushPaths, tried again if tagging a path failed
// because a collector deleted its manifest (an image layout's sweep of a
// manifest blob the push found stored).
func (p *pusher) pushPathsGuarded(ctx context.Context, g gcGuard, infos []*narinfo.NarInfo) ([]PathArtifact, int, error) {
	for attempt := 1; ; attempt++ {
		paths, packed, err := p.pushPaths(ctx, infos)
		if !errors.Is(err, errdef.ErrNotFound) || !retryAfterGC(ctx, g, err, attempt, "storing the paths", p.dst) {
			return paths, packed, err
		}
	}
}

// storeClosureGuarded stores the closure; if that fails while a
// collector may have deleted something (a registry refuses an index
// naming a manifest it lacks), what vanished is stored again and the
// closure once more.
func (p *pusher) storeClosureGuarded(ctx context.Context, g gcGuard, infos []*narinfo.NarInfo, res *PushResult) error {
	for attempt := 1; ; attempt++ {
		err := p.storeClosureOf(ctx, res)
		if !retryAfterGC(ctx, g, err, attempt, "storing the closure", p.dst) {
			return err
		}
		if err := p.restorePaths(ctx, infos, res); err != nil {
			return err
		}
	}
}

// gcFinish is run after a push tagged its closure: it stores the push
// record and, if a collector may have deleted something the closure
// reaches, stores again whatever vanished and the closure itself.
func (p *pusher) gcFinish(ctx context.Context, g gcGuard, infos []*narinfo.NarInfo, res *PushResult) error {
	var check bool
	err := storeRecordPruned(ctx, p.dst, res.Closure, res.Tag, p.opts.Record, func() (err error) {
		check, err = g.afterTag(ctx)
		return err
	})
	if err != nil || !check {
		return err
	}
	before := res.Closure
	if err := p.restorePaths(ctx, infos, res); err != nil {
		return err
	}
	if err := p.storeClosureOf(ctx, res); err != nil {
		return err
	}
	if res.Closure.Digest != before.Digest {
		if _, err := StorePushRecord(ctx, p.dst, res.Closure, res.Tag, p.opts.Record); err != nil {
			return fmt.Errorf("closure %s tagged, but %w", res.Tag, err)
		}
	}
	return nil
}

// restorePaths stores again each path of res that is not intact in the
// target: from its NAR blob if that is still there, else from the source.
func (p *pusher) restorePaths(ctx context.Context, infos []*narinfo.NarInfo, res *PushResult) error {
	p.batch = nil // closed by now: tag one path at a time
	if err := p.pushBlob(ctx, spec.EmptyConfig, bytes.NewReader(spec.EmptyConfigData)); err != nil {
		return err
	}
	source := make(map[string]*narinfo.NarInfo, len(infos))
	for _, info := range infos {
		source[info.StorePath] = info
	}
	var mu sync.Mutex
	restored := 0
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.opts.Jobs)
	for i, art := range res.Paths {
		g.Go(func() error {
			// A collection may delete again what is being stored (in a
			// layout, a blob found stored before the sweep took it):
			// check and store again, as often as a step is tried.
			for attempt := 1; ; attempt++ {
				ok, err := pathIntact(gctx, p.dst, art)
				if err != nil || ok {
					return err
				}
				if ok, err = p.dst.Exists(gctx, art.NAR); err != nil {
					return err
				}
				var again PathArtifact
				if ok {
					again, err = p.store(gctx, art.Info, nil, 0)
				} else {
					again, err = p.packAndStore(gctx, source[art.Info.StorePath])
				}
				if errors.Is(err, errdef.ErrNotFound) && attempt < gcAttempts {
					continue
				}
				if err != nil {
					return fmt.Errorf("%s: storing again what a garbage collection deleted: %w", art.Info.StorePath, err)
				}
				res.Paths[i] = again
				mu.Lock()
				restored++
				mu.Unlock()
				return nil
			}
		})
	}
	err := g.Wait()
	if restored > 0 {
		slog.Info("stored again paths a garbage collection deleted", "target", p.dst, "paths", restored)
	}
	return err
}

// packAndStore reads a path's NAR from the source again and stores it.
func (p *pusher) packAndStore(ctx context.Context, info *narinfo.NarInfo) (PathArtifact, error) {
	packed, f, n, err := p.pack(ctx, info)
	if err != nil {
		return PathArtifact{}, err
	}
	defer f.Close()
	return p.store(ctx, packed, f, n)
}

// gcFinishUnchanged is gcFinish for a re-push that found its closure
// tagged already and wrote nothing: it stores the push record, and
// reports false if a collector may have deleted something meanwhile, so
// that the push is done in full.
func (p *pusher) gcFinishUnchanged(ctx context.Context, g gcGuard, res *PushResult) (bool, error) {
	var check bool
	err := storeRecordPruned(ctx, p.dst, res.Closure, res.Tag, p.opts.Record, func() (err error) {
		check, err = g.afterTag(ctx)
		return err
	})
	return err == nil && !check, err
}

// gcCopyCheck is run by a copy before and after writing its tag: if a
// collector may have deleted something since the copy began, every
// manifest the copy reaches (and, where the collector deletes blobs,
// every blob) is checked at the destination and copied again if missing,
// and the path and layer tags are written again.
func (c *copier) gcCopyCheck(ctx context.Context, g gcGuard, afterTag bool, roots []ocispec.Descriptor, paths []PathClaim, layerTags []string) (bool, error) {
	var check bool
	var err error
	if afterTag {
		check, err = g.afterTag(ctx)
	} else {
		check, _, err = g.overlap(ctx)
	}
	if err != nil || !check {
		return false, err
	}
	c.copied = sync.Map{}
	walk := slices.Clone(roots)
	for _, p := range paths {
		walk = append(walk, p.Manifest)
	}
	if err := c.copyMissing(ctx, walk); err != nil {
		return true, err
	}
	if err := c.copyPaths(ctx, paths); err != nil {
		return true, err
	}
	return true, c.copyLayerArtifacts(ctx, layerTags)
}

// copyMissing walks what roots reach in the source and copies to the
// destination every manifest it lacks (after what that manifest names)
// and, where a collector deletes blobs, every blob it lacks. Unlike
// oras.CopyGraph it looks below manifests the destination has.
func (c *copier) copyMissing(ctx context.Context, roots []ocispec.Descriptor) error {
	seen := map[digest.Digest]bool{}
	blobs := deletesBlobs(c.dst)
	var walk func(d ocispec.Descriptor) error
	walk = func(d ocispec.Descriptor) error {
		if seen[d.Digest] {
			return nil
		}
		seen[d.Digest] = true
		if !backend.IsManifest(d.MediaType) {
			if !blobs {
				return nil
			}
			return c.copyBlob(ctx, d)
		}
		data, err := backend.FetchAll(ctx, c.src, d, backend.MaxManifestRead)
		if err != nil {
			return err
		}
		succ, err := backend.Successors(d, data)
		if err != nil {
			return err
		}
		for _, s := range succ {
			if err := walk(s); err != nil {
				return err
			}
		}
		if ok, err := c.dst.Exists(ctx, d); err != nil || ok {
			return err
		}
		slog.Info("copying again what a garbage collection deleted", "target", c.dst, "manifest", d.Digest)
		if err := c.dst.Push(ctx, d, bytes.NewReader(data)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
			return err
		}
		return nil
	}
	for _, r := range roots {
		if err := walk(r); err != nil {
			return err
		}
	}
	return nil
}
