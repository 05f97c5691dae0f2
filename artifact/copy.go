package artifact

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// CopyOptions configure Copy. The zero value is usable.
type CopyOptions struct {
	// Jobs bounds concurrent requests; default 16, since copying waits on
	// the network, not the CPU.
	Jobs int
	// Progress, if set, is updated as paths are copied.
	Progress *Progress
	// Record says what the push record written after a closure's tag
	// holds (SPEC.md section 10.1).
	Record RecordOptions
}

// CopyResult describes a copy.
type CopyResult struct {
	Kind       string             `json:"kind"` // "closure", "image", "image index" or "path"
	Descriptor ocispec.Descriptor `json:"descriptor"`
	Paths      int                `json:"paths"`
	// Blobs and manifests copied, mounted from the source repository
	// (same registry, no bytes sent), and found at the destination.
	Copied       int64 `json:"copied"`
	CopiedBytes  int64 `json:"copiedBytes"`
	Mounted      int64 `json:"mounted"`
	MountedBytes int64 `json:"mountedBytes"`
	Skipped      int64 `json:"skipped"`
	// Tags written at the destination: path and layer tags, the tags of
	// the file artifacts a closure lists, then the closure or image tag.
	Tagged int64 `json:"tagged"`
	// Files counts the file artifacts (realisations, build logs,
	// listings, debug-info entries) the closure lists; FilesKept their
	// tags that name another artifact at the destination, which is kept.
	Files     int `json:"files,omitempty"`
	FilesKept int `json:"filesKept,omitempty"`
	// PathsElsewhere counts the store paths of an image whose manifests
	// the source does not hold (the image was written to another target
	// than its closure): the image is copied, those paths are not.
	PathsElsewhere int64 `json:"pathsElsewhere,omitempty"`
	// UpToDate: the destination tag named this artifact already, and
	// nothing was done.
	UpToDate bool `json:"upToDate"`
}

// Copy copies the closure, image or store path that srcRef names in src
// to dst, tagged dstTag, with everything a substituter needs there: the
// artifact and everything it refers to, each store path's manifest tagged
// with its hash (so lookups take one request), and for an image made by
// nixoci image the layer artifacts that let later images reuse its
// layers. What dst has already is skipped; blobs are mounted instead of
// uploaded when both are repositories of one registry. The closure or
// image tag is written last, and only if everything else succeeded. An
// artifact that is not nixoci's is refused (ErrNotArtifact): copy it with
// oras copy or crane copy.
func Copy(ctx context.Context, src backend.Target, srcRef string, dst backend.Target, dstTag string, opts CopyOptions) (*CopyResult, error) {
	guard := newGCGuard(dst)
	if opts.Jobs <= 0 {
		opts.Jobs = 16
	}
	if !spec.ValidTag(dstTag) {
		return nil, fmt.Errorf("invalid destination tag %q", dstTag)
	}
	desc, data, err := backend.FetchManifest(ctx, src, srcRef)
	if err != nil {
		return nil, err
	}
	res := &CopyResult{Descriptor: desc}
	c := &copier{src: src, dst: dst, opts: opts, res: res}
	c.graph = c.graphOptions()
	paths, layerTags, err := c.plan(ctx, srcRef, desc, data)
	if err != nil {
		return nil, err
	}
	res.Paths = len(paths)
	if opts.Progress != nil {
		opts.Progress.PathsTotal.Store(int64(len(paths)))
	}
	if cur, err := dst.Resolve(ctx, dstTag); err == nil && cur.Digest == desc.Digest {
		res.UpToDate = true
		return res, nil
	} else if err != nil && !errors.Is(err, errdef.ErrNotFound) {
		return nil, err
	}

	// Paths first, each tagged, then what else the artifact refers to,
	// then the artifact itself under its tag.
	if err := c.copyPaths(ctx, paths); err != nil {
		return nil, err
	}
	if err := c.copyLayerArtifacts(ctx, layerTags); err != nil {
		return nil, err
	}
	if err := c.copyFiles(ctx); err != nil {
		return nil, err
	}
	rest := c.graph
	rest.FindSuccessors = func(ctx context.Context, f content.Fetcher, d ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		succ, err := content.Successors(ctx, f, d)
		return slices.DeleteFunc(succ, func(s ocispec.Descriptor) bool { return c.done(s.Digest) }), err
	}
	rest.PreCopy = func(_ context.Context, d ocispec.Descriptor) error {
		if d.Digest == desc.Digest {
			return oras.SkipNode // pushed with its tag below
		}
		return nil
	}
	if err := oras.CopyGraph(ctx, src, dst, desc, rest); err != nil {
		return nil, fmt.Errorf("copying %s: %w", srcRef, err)
	}
	roots := []ocispec.Descriptor{desc}
	if _, err := c.gcCopyCheck(ctx, guard, false, roots, paths, layerTags); err != nil {
		return nil, fmt.Errorf("copying %s: %w", srcRef, err)
	}
	if err := dst.PushReference(ctx, desc, bytes.NewReader(data), dstTag); err != nil {
		return nil, fmt.Errorf("tagging %s: %w", dstTag, err)
	}
	res.Tagged++
	if res.Kind == "closure" {
		if _, err := StorePushRecord(ctx, dst, desc, dstTag, opts.Record); err != nil {
			return nil, fmt.Errorf("closure %s tagged, but %w", dstTag, err)
		}
		pruneLogged(ctx, dst, desc, dstTag)
	}
	if again, err := c.gcCopyCheck(ctx, guard, true, roots, paths, layerTags); err != nil {
		return nil, fmt.Errorf("copying %s: %w", srcRef, err)
	} else if again {
		if err := dst.PushReference(ctx, desc, bytes.NewReader(data), dstTag); err != nil {
			return nil, fmt.Errorf("tagging %s: %w", dstTag, err)
		}
	}
	return res, nil
}

type copier struct {
	src, dst backend.Target
	opts     CopyOptions
	res      *CopyResult
	graph    oras.CopyGraphOptions
	copied   sync.Map             // digest -> true: at the destination now
	files    []ocispec.Descriptor // a closure's file entries
}

func (c *copier) done(d digest.Digest) bool {
	_, ok := c.copied.Load(d)
	return ok
}

// copyBlob copies a blob unless this copy has already.
func (c *copier) copyBlob(ctx context.Context, d ocispec.Descriptor) error {
	if c.done(d.Digest) {
		return nil
	}
	if err := oras.CopyGraph(ctx, c.src, c.dst, d, c.graph); err != nil {
		return err
	}
	c.copied.Store(d.Digest, true)
	return nil
}

// graphOptions counts what a graph copy does and mounts blobs across
// repositories of one registry.
func (c *copier) graphOptions() oras.CopyGraphOptions {
	g := oras.DefaultCopyGraphOptions
	g.Concurrency = c.opts.Jobs
	g.PostCopy = func(_ context.Context, d ocispec.Descriptor) error {
		atomic.AddInt64(&c.res.Copied, 1)
		atomic.AddInt64(&c.res.CopiedBytes, d.Size)
		if c.opts.Progress != nil {
			c.opts.Progress.Transferred.Add(d.Size)
		}
		return nil
	}
	g.OnCopySkipped = func(context.Context, ocispec.Descriptor) error {
		atomic.AddInt64(&c.res.Skipped, 1)
		return nil
	}
	g.OnMounted = func(_ context.Context, d ocispec.Descriptor) error {
		atomic.AddInt64(&c.res.Mounted, 1)
		atomic.AddInt64(&c.res.MountedBytes, d.Size)
		return nil
	}
	if repo, ok := backend.MountSource(c.src, c.dst); ok {
		g.MountFrom = func(context.Context, ocispec.Descriptor) ([]string, error) { return []string{repo}, nil }
	}
	return g
}

// plan reads what srcRef names and returns the path manifests to copy and
// tag (what the source claims of each), and for an image the tags of its
// layer artifacts.
func (c *copier) plan(ctx context.Context, srcRef string, desc ocispec.Descriptor, data []byte) ([]PathClaim, []string, error) {
	var probe manifestProbe
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", srcRef, err)
	}
	switch probe.ArtifactType {
	case spec.ArtifactTypePath:
		c.res.Kind = "path"
		return []PathClaim{{Manifest: desc}}, nil, nil
	case spec.ArtifactTypeClosure, spec.ArtifactTypeClosureV2, spec.ArtifactTypeClosureFiles:
		c.res.Kind = "closure"
		cl, err := ParseClosure(ctx, c.src, srcRef, desc, data)
		if err != nil {
			return nil, nil, err
		}
		out := make([]PathClaim, len(cl.Members))
		if cl.Version == spec.ClosureV2 {
			for i, m := range cl.Members {
				out[i] = m.Claim()
			}
			c.files = cl.Files
			c.res.Files = len(cl.Files)
			return out, nil, nil
		}
		arts, err := ClosurePaths(ctx, c.src, cl, c.opts.Jobs)
		if err != nil {
			return nil, nil, err
		}
		for i, a := range arts {
			out[i] = PathClaim{Hash: cl.Members[i].Hash, StorePath: a.Info.StorePath, Manifest: a.Manifest}
		}
		return out, nil, nil
	}
	var m ocispec.Manifest
	if desc.MediaType == ocispec.MediaTypeImageManifest && json.Unmarshal(data, &m) == nil && IsImage(m) {
		c.res.Kind = "image"
		return c.imagePaths(ctx, m)
	}
	if desc.MediaType == ocispec.MediaTypeImageIndex && len(probe.Manifests) > 0 {
		// A multi-platform image made by nixoci image: each of its
		// images, with its paths and layer artifacts.
		var paths []PathClaim
		var layerTags []string
		ours := true
		for _, child := range probe.Manifests {
			cdata, err := backend.FetchAll(ctx, c.src, child, backend.MaxManifestRead)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: image %s: %w", srcRef, child.Digest, err)
			}
			var cm ocispec.Manifest
			if child.MediaType != ocispec.MediaTypeImageManifest || json.Unmarshal(cdata, &cm) != nil || !IsImage(cm) {
				ours = false
				break
			}
			ps, ts, err := c.imagePaths(ctx, cm)
			if err != nil {
				return nil, nil, err
			}
			paths, layerTags = append(paths, ps...), append(layerTags, ts...)
		}
		if ours {
			c.res.Kind = "image index"
			return dedupe(paths), slices.Compact(slices.Sorted(slices.Values(layerTags))), nil
		}
	}
	kind := probe.ArtifactType
	if kind == "" {
		kind = probe.MediaType
	}
	return nil, nil, fmt.Errorf("%s is %s, not a nixoci closure, store path or image: %w (copy other artifacts with oras copy or crane copy)", srcRef, kind, ErrNotArtifact)
}

// imagePaths lists the path manifests an image's layers were made from
// (their annotations name them) and the tags of its layer artifacts.
func (c *copier) imagePaths(ctx context.Context, m ocispec.Manifest) ([]PathClaim, []string, error) {
	refs, err := ReadImageRefs(m)
	if err != nil {
		return nil, nil, err
	}
	// An image written to another target than its closure's has no
	// path manifests beside it: it is then copied as the image it is.
	found := make([]ocispec.Descriptor, len(refs.PathManifests))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.opts.Jobs)
	for i, d := range refs.PathManifests {
		g.Go(func() error {
			desc, err := c.src.Resolve(gctx, d.String())
			if errors.Is(err, errdef.ErrNotFound) {
				atomic.AddInt64(&c.res.PathsElsewhere, 1)
				return nil
			} else if err != nil {
				return fmt.Errorf("path manifest %s of the image: %w", d, err)
			}
			found[i] = desc
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	var out []PathClaim
	for _, d := range found {
		if d.Digest != "" {
			out = append(out, PathClaim{Manifest: d})
		}
	}
	return out, refs.LayerTags, nil
}

// copyPaths copies each path manifest (and its blobs) unless dst has it,
// and tags it with its store path's hash unless that tag names it already.
// A layout is tagged in one rewrite of its index at the end.
func (c *copier) copyPaths(ctx context.Context, paths []PathClaim) error {
	batch, _ := c.dst.(backend.BatchTagger)
	var mu sync.Mutex
	var pending []backend.Tagged
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.opts.Jobs)
	for _, claim := range paths {
		g.Go(func() error {
			art, data, err := ResolvePathManifest(gctx, c.src, claim)
			if err != nil {
				return err
			}
			d := art.Manifest
			tag := spec.PathTag(art.Info.StorePath)
			defer c.copied.Store(d.Digest, true)
			if cur, err := c.dst.Resolve(gctx, tag); err == nil && cur.Digest == d.Digest {
				atomic.AddInt64(&c.res.Skipped, 1)
				c.opts.Progress.pathDone(art.Info.NarSize, true)
				return nil
			}
			for _, b := range []ocispec.Descriptor{spec.EmptyConfig, art.NAR, art.NarInfo} {
				if err := c.copyBlob(gctx, b); err != nil {
					return fmt.Errorf("%s: %w", art.Info.StorePath, err)
				}
			}
			if batch != nil {
				if err := c.dst.Push(gctx, art.Manifest, bytes.NewReader(data)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
					return fmt.Errorf("%s: %w", art.Info.StorePath, err)
				}
				mu.Lock()
				pending = append(pending, backend.Tagged{Descriptor: art.Manifest, Tag: tag})
				mu.Unlock()
			} else if err := c.dst.PushReference(gctx, art.Manifest, bytes.NewReader(data), tag); err != nil {
				return fmt.Errorf("%s: tagging %s: %w", art.Info.StorePath, tag, err)
			}
			atomic.AddInt64(&c.res.Tagged, 1)
			c.opts.Progress.pathDone(art.Info.NarSize, false)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if len(pending) > 0 {
		return batch.TagMany(ctx, pending)
	}
	return nil
}

// copyLayerArtifacts copies the layer artifacts the source has under
// tags; one the source lacks is skipped (a later image converts it).
func (c *copier) copyLayerArtifacts(ctx context.Context, tags []string) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.opts.Jobs)
	for _, tag := range tags {
		g.Go(func() error {
			desc, data, err := backend.FetchManifest(gctx, c.src, tag)
			if errors.Is(err, errdef.ErrNotFound) {
				return nil
			} else if err != nil {
				return fmt.Errorf("layer artifact %s: %w", tag, err)
			}
			if cur, err := c.dst.Resolve(gctx, tag); err == nil && cur.Digest == desc.Digest {
				return nil
			}
			if err := oras.CopyGraph(gctx, c.src, c.dst, desc, c.graph); err != nil {
				return fmt.Errorf("layer artifact %s: %w", tag, err)
			}
			if err := c.dst.PushReference(gctx, desc, bytes.NewReader(data), tag); err != nil {
				return fmt.Errorf("tagging %s: %w", tag, err)
			}
			atomic.AddInt64(&c.res.Tagged, 1)
			return nil
		})
	}
	return g.Wait()
}

// copyFiles copies the file artifacts a closure lists and tags each at
// the destination as its kind is found there (SPEC.md section 12), so
// that serve answers them with one lookup. A tag that names another
// artifact at the destination (a realisation with other signatures, a
// newer log) is left as it is.
func (c *copier) copyFiles(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.opts.Jobs)
	var kept atomic.Int64
	for _, e := range c.files {
		g.Go(func() error {
			cf, err := FetchClosureFile(gctx, c.src, e)
			if err != nil {
				return err
			}
			tags, err := FileTags(cf.Artifact, cf.StorePath)
			if err != nil {
				return err
			}
			desc := plainDescriptor(e)
			if err := oras.CopyGraph(gctx, c.src, c.dst, desc, c.graph); err != nil {
				return fmt.Errorf("%s of %s: %w", e.ArtifactType, cf.StorePath, err)
			}
			c.copied.Store(e.Digest, true)
			for _, tag := range tags {
				cur, err := c.dst.Resolve(gctx, tag)
				switch {
				case err == nil && cur.Digest == desc.Digest:
					continue
				case err == nil:
					kept.Add(1)
					continue
				case !errors.Is(err, errdef.ErrNotFound):
					return fmt.Errorf("tag %s: %w", tag, err)
				}
				if err := c.dst.Tag(gctx, desc, tag); err != nil {
					return fmt.Errorf("tagging %s: %w", tag, err)
				}
				atomic.AddInt64(&c.res.Tagged, 1)
			}
			return nil
		})
	}
	err := g.Wait()
	c.res.FilesKept = int(kept.Load())
	return err
}

// dedupe keeps the first claim of each manifest.
func dedupe(cs []PathClaim) []PathClaim {
	seen := map[digest.Digest]bool{}
	out := cs[:0]
	for _, c := range cs {
		if !seen[c.Manifest.Digest] {
			seen[c.Manifest.Digest] = true
			out = append(out, c)
		}
	}
	return out
}
