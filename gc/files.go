package gc

import (
	"context"
	"errors"
	"path"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/spec"
)

// Build logs, realisations, NAR listings and debug-info entries (SPEC.md
// sections 12.5 and 12.6): a closure that lists one reaches it; one
// found by its tag stays while what it belongs to is reached, and is
// garbage otherwise.

// closureFiles records the file artifacts the closure c lists as
// reached by it (n.digests) and as its own (deleted with it when no rule
// keeps them).
func closureFiles(n *node, c *artifact.Closure) {
	for _, f := range c.Files {
		n.digests = append(n.digests, f.Digest)
		n.own = append(n.own, ownManifest{kind: KindFile, desc: plain(f)})
	}
}

// taggedFile is a file artifact as its tag names it.
type taggedFile struct {
	fa  *artifact.FileArtifact
	tag string
}

// fileKindOfTag is the artifact type a file tag's form names.
func fileKindOfTag(tag string) string {
	switch {
	case strings.HasSuffix(tag, ".log"):
		return spec.ArtifactTypeLog
	case strings.HasSuffix(tag, ".ls"):
		return spec.ArtifactTypeListing
	case strings.HasPrefix(tag, "debuginfo."):
		return spec.ArtifactTypeDebugInfo
	}
	return spec.ArtifactTypeRealisation
}

// markFiles decides every file tag of the look: a realisation is kept
// while its output path is reached, a listing while its path (the tag's
// hash part) is, a log while a reached path names its derivation as
// deriver, a debug-info entry while a reached path's NAR blob is its
// archive; kept ones are added to mk.reach (so that an unreached closure
// listing them does not take them along), the others are garbage. A tag
// naming anything but the file artifact its form says is left alone.
func (m *marker) markFiles(ctx context.Context, mk *marking, g *garbage) error {
	files, err := m.readFileTags(ctx, mk.look)
	if err != nil || len(files) == 0 {
		return err
	}
	var reached *reachedPaths
	garbageTags := map[digest.Digest][]string{}
	byDigest := map[digest.Digest]*artifact.FileArtifact{}
	for _, tf := range files {
		d := tf.fa.Manifest.Digest
		if mk.reach.digests[d] {
			continue
		}
		keep := false
		switch tf.fa.Type {
		case spec.ArtifactTypeRealisation:
			keep = mk.reach.hashes[spec.PathTag(tf.fa.Annotations[spec.AnnotationStorePath])]
		case spec.ArtifactTypeListing:
			keep = mk.reach.hashes[strings.TrimSuffix(tf.tag, ".ls")]
		case spec.ArtifactTypeLog, spec.ArtifactTypeDebugInfo:
			if reached == nil {
				if reached, err = m.reachedPaths(ctx, mk); err != nil {
					return err
				}
			}
			if tf.fa.Type == spec.ArtifactTypeLog {
				keep = reached.derivers[path.Base(tf.fa.Annotations[spec.AnnotationDrvPath])]
			} else {
				keep = reached.nars[digest.Digest(tf.fa.Annotations[spec.AnnotationArchive])]
			}
		}
		if keep {
			mk.reach.digests[d] = true
			continue
		}
		garbageTags[d] = append(garbageTags[d], tf.tag)
		byDigest[d] = tf.fa
	}
	for d, tags := range garbageTags {
		if mk.reach.digests[d] {
			continue // kept through another of its tags
		}
		fa := byDigest[d]
		it := Item{Kind: KindFile, Digest: d, Tags: tags, mediaType: fa.Manifest.MediaType, manifestSize: fa.Manifest.Size, Size: fa.Manifest.Size}
		switch fa.Type {
		case spec.ArtifactTypeRealisation:
			it.StorePath = fa.Annotations[spec.AnnotationStorePath]
			it.keptWith = spec.PathTag(it.StorePath)
		case spec.ArtifactTypeListing:
			it.keptWith = strings.TrimSuffix(tags[0], ".ls")
		}
		for _, f := range fa.Files {
			it.blobs = append(it.blobs, f.Descriptor())
			it.Size += f.Size
		}
		g.add(it)
	}
	return nil
}

// readFileTags reads what each file tag names: the file artifacts that
// fit their tags. Each tag is read once per collection, as path and
// layer tags are (taggedItem): a tag that names something else later is
// left for the next collection.
func (m *marker) readFileTags(ctx context.Context, lk *look) ([]taggedFile, error) {
	var mu sync.Mutex
	var out []taggedFile
	eg, gctx := errgroup.WithContext(ctx)
	eg.SetLimit(m.opts.Jobs)
	for tag := range lk.fileTags {
		eg.Go(func() error {
			m.mu.Lock()
			fa, ok := m.files[tag]
			m.mu.Unlock()
			if !ok {
				var err error
				fa, err = artifact.FetchFileArtifact(gctx, m.t, tag, fileKindOfTag(tag))
				if errors.Is(err, errdef.ErrNotFound) {
					return nil // gone since listed
				} else if errors.Is(err, artifact.ErrNotArtifact) || err == nil && !artifact.FileFitsTag(fa, tag) {
					fa = nil // not ours: left alone
				} else if err != nil {
					return err
				}
				m.mu.Lock()
				m.files[tag] = fa
				m.mu.Unlock()
			}
			if fa == nil {
				return nil
			}
			mu.Lock()
			out = append(out, taggedFile{fa: fa, tag: tag})
			mu.Unlock()
			return nil
		})
	}
	return out, eg.Wait()
}

// reachedPaths is what the reached store paths record: their derivers
// (base names) and NAR blobs.
type reachedPaths struct {
	derivers map[string]bool
	nars     map[digest.Digest]bool
}

// reachedPaths reads the deriver and NAR of every reached store path:
// from the narinfos in the entries of reached version 2 closures (read
// again whole: the collector's reader skips them), else from the path's
// manifest (by its tag).
func (m *marker) reachedPaths(ctx context.Context, mk *marking) (*reachedPaths, error) {
	rp := &reachedPaths{derivers: map[string]bool{}, nars: map[digest.Digest]bool{}}
	covered := map[string]bool{}
	var mu sync.Mutex
	add := func(art artifact.PathArtifact) {
		mu.Lock()
		defer mu.Unlock()
		covered[spec.PathTag(art.Info.StorePath)] = true
		if art.Info.Deriver != "" {
			rp.derivers[art.Info.Deriver] = true
		}
		rp.nars[art.NAR.Digest] = true
	}
	var closures []ocispec.Descriptor
	m.reader.mu.Lock()
	for d, n := range m.reader.nodes {
		if mk.reach.digests[d] && n.kind == nodeClosure && spec.IsClosureIndexType(n.artifactType) {
			closures = append(closures, n.desc)
		}
	}
	m.reader.mu.Unlock()
	eg, gctx := errgroup.WithContext(ctx)
	eg.SetLimit(m.opts.Jobs)
	for _, d := range closures {
		eg.Go(func() error {
			c, err := artifact.ReadClosure(gctx, m.t, d.Digest.String())
			if errors.Is(err, errdef.ErrNotFound) {
				return nil
			} else if err != nil {
				return err
			}
			for _, mb := range c.Members {
				if mb.Path != nil {
					add(*mb.Path)
				}
			}
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return nil, err
	}
	var hashes []string
	for h := range mk.reach.hashes {
		if !covered[h] && mk.look.pathTags[h] {
			hashes = append(hashes, h)
		}
	}
	eg, gctx = errgroup.WithContext(ctx)
	eg.SetLimit(m.opts.Jobs)
	for _, h := range hashes {
		eg.Go(func() error {
			art, err := artifact.FetchPathByHash(gctx, m.t, h)
			if errors.Is(err, errdef.ErrNotFound) || errors.Is(err, artifact.ErrNotArtifact) {
				return nil
			} else if err != nil {
				return err
			}
			add(art)
			return nil
		})
	}
	return rp, eg.Wait()
}
