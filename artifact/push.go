package artifact

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// PushOptions configure Push. The zero value is usable.
type PushOptions struct {
	// Tag names the closure; default spec.DefaultClosureTag of the first root.
	Tag string
	// Jobs is how many store paths are processed at once; default
	// max(4, number of CPUs). It never changes what is written.
	Jobs int
	// SignKeys sign every narinfo (replacing older signatures by the same
	// key name).
	SignKeys []narinfo.SecretKey
	// TempDir holds compressed NARs until they are stored; default
	// os.TempDir().
	TempDir string
	// ManifestLimit is the largest manifest written; default
	// spec.MaxManifestSize.
	ManifestLimit int
	// Progress, if set, is updated as work is done.
	Progress *Progress
	// ClosureVersion is the format version of the closure written:
	// spec.ClosureVersion by default, or spec.Version ("1") for readers
	// that know only version 1. Store-path artifacts are the same in both.
	ClosureVersion string
}

// PushResult describes a pushed closure.
type PushResult struct {
	Roots   []string
	Tag     string
	Closure ocispec.Descriptor // what Tag names: a manifest, or an index of parts
	Paths   []PathArtifact     // sorted by store path
	Packed  int                // paths whose NAR was read and stored now
	Reused  int                // paths whose artifact already existed
	Parts   int                // part manifests or indexes of a split closure (0 if not split)
	// Index is what a version 2 closure stored besides its paths; Manifest
	// what a version 1 closure did.
	Index    ClosureIndex
	Manifest ClosureManifests
}

// Push stores the closures of the store paths args name (see
// Source.ResolveRoot) in dst and tags the closure. Store paths whose
// artifact exists in dst are reused without reading their NAR. Every
// blob is stored before the manifest naming it, and every path before the
// closure; the closure tag is written last, and only if everything
// succeeded.
func Push(ctx context.Context, dst backend.Target, src Source, args []string, opts PushOptions) (*PushResult, error) {
	if len(args) == 0 {
		return nil, errors.New("no store paths given")
	}
	var roots []string
	for _, a := range args {
		r, err := src.ResolveRoot(a)
		if err != nil {
			return nil, err
		}
		roots = append(roots, r)
	}
	tag := opts.Tag
	if tag == "" {
		var err error
		if tag, err = spec.DefaultClosureTag(roots[0]); err != nil {
			return nil, err
		}
	}
	if !spec.ValidTag(tag) {
		return nil, fmt.Errorf("invalid tag %q: tags are 1-128 characters [a-zA-Z0-9_.-], not starting with . or -", tag)
	}
	slices.Sort(roots)
	roots = slices.Compact(roots)

	infos, err := src.Closure(ctx, roots)
	if err != nil {
		return nil, fmt.Errorf("reading closure from %s: %w", src, err)
	}
	p := &pusher{dst: dst, src: src, opts: opts}
	if p.opts.Jobs <= 0 {
		p.opts.Jobs = max(4, runtime.NumCPU())
	}
	if opts.Progress != nil {
		opts.Progress.PathsTotal.Store(int64(len(infos)))
	}
	if err := p.pushBlob(ctx, emptyConfig, func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(emptyConfigData)), nil
	}); err != nil {
		return nil, err
	}
	if bt, ok := dst.(backend.BatchTagger); ok {
		p.batch = newTagBatcher(bt)
	}

	// Largest first, so the longest NAR is not left to run alone at the end.
	order := slices.Clone(infos)
	sort.SliceStable(order, func(i, j int) bool { return order[i].NarSize > order[j].NarSize })
	arts := make([]PathArtifact, len(order))
	packed := make([]bool, len(order))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.opts.Jobs)
	for i, info := range order {
		g.Go(func() error {
			art, didPack, err := p.pushPath(gctx, info)
			arts[i], packed[i] = art, didPack
			if err == nil {
				opts.Progress.pathDone(info.NarSize, !didPack)
			}
			return err
		})
	}
	err = g.Wait()
	if p.batch != nil {
		// Tag what was completed even after a failure: those paths are
		// whole, and a re-run will not redo them.
		if ferr := p.batch.close(ctx); err == nil {
			err = ferr
		}
	}
	if err != nil {
		return nil, err
	}

	res := &PushResult{Roots: roots, Tag: tag, Paths: arts}
	for _, d := range packed {
		if d {
			res.Packed++
		} else {
			res.Reused++
		}
	}
	sort.Slice(res.Paths, func(i, j int) bool { return res.Paths[i].Info.StorePath < res.Paths[j].Info.StorePath })
	storeDir := path.Dir(roots[0])
	switch opts.ClosureVersion {
	case spec.Version:
		cm, err := NewClosureManifests(roots, res.Paths, storeDir, opts.ManifestLimit)
		if err != nil {
			return nil, err
		}
		if err := p.storeClosure(ctx, cm, tag); err != nil {
			return nil, err
		}
		res.Manifest, res.Closure, res.Parts = cm, cm.Top.Descriptor, len(cm.Parts)
	case "", spec.ClosureVersion:
		ci, err := NewClosureIndex(roots, res.Paths, storeDir, opts.ManifestLimit)
		if err != nil {
			return nil, err
		}
		if err := p.storeClosureIndex(ctx, ci, tag); err != nil {
			return nil, err
		}
		res.Index, res.Closure, res.Parts = ci, ci.Top.Descriptor, len(ci.Parts)
	default:
		return nil, fmt.Errorf("closure format version %q: this nixoci writes %q and %q", opts.ClosureVersion, spec.ClosureVersion, spec.Version)
	}
	return res, nil
}

type pusher struct {
	dst   backend.Target
	src   Source
	opts  PushOptions
	batch *tagBatcher
}

// pushPath stores one store path, or reuses its stored artifact.
func (p *pusher) pushPath(ctx context.Context, info *narinfo.NarInfo) (PathArtifact, bool, error) {
	var existing PathArtifact
	err := retryTransient(ctx, p.opts.Progress, "manifest of "+info.StorePath, func() (err error) {
		existing, err = FetchPath(ctx, p.dst, info.StorePath)
		return err
	})
	switch {
	case err == nil:
		art, err := p.reuse(ctx, existing, info)
		return art, false, err
	case !errors.Is(err, errdef.ErrNotFound):
		return PathArtifact{}, false, err
	}
	art, err := p.pack(ctx, info)
	return art, true, err
}

// reuse keeps a stored artifact, adding signatures it lacks: those the
// source has for the same NAR and those of the signing keys. That needs a
// new narinfo blob and manifest, but never the NAR.
func (p *pusher) reuse(ctx context.Context, art PathArtifact, src *narinfo.NarInfo) (PathArtifact, error) {
	info := *art.Info
	info.Sigs = slices.Clone(info.Sigs)
	if src.NarHash == info.NarHash {
		for _, s := range src.Sigs {
			if !slices.Contains(info.Sigs, s) {
				info.Sigs = append(info.Sigs, s)
			}
		}
	} else {
		slog.Warn("stored artifact differs from the source; keeping the stored one",
			"path", info.StorePath, "stored", info.NarHash, "source", src.NarHash)
	}
	for _, k := range p.opts.SignKeys {
		if !k.Public().Verify(&info) {
			if err := info.AddSignature(k); err != nil {
				return PathArtifact{}, err
			}
		}
	}
	if slices.Equal(info.Sigs, art.Info.Sigs) {
		return art, nil
	}
	return p.store(ctx, &info, nil, 0)
}

// pack reads the path's NAR from the source into a temporary file, then
// stores it.
func (p *pusher) pack(ctx context.Context, info *narinfo.NarInfo) (PathArtifact, error) {
	f, err := anonymousTempFile(p.opts.TempDir)
	if err != nil {
		return PathArtifact{}, err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	hw := &hashingWriter{w: bw, h: sha256.New()}
	comp, err := p.src.WriteNAR(ctx, info, hw)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return PathArtifact{}, err
	}
	fileHash, err := narinfo.HashFromDigest(hw.h.Sum(nil))
	if err != nil {
		return PathArtifact{}, err
	}
	if info.FileHash != "" && info.FileHash != fileHash {
		return PathArtifact{}, fmt.Errorf("%s: compressed NAR is %s but its narinfo says FileHash %s: %w", info.StorePath, fileHash, info.FileHash, ErrHashMismatch)
	}
	if info.FileSize != 0 && info.FileSize != uint64(hw.n) {
		return PathArtifact{}, fmt.Errorf("%s: compressed NAR is %d bytes but its narinfo says FileSize %d: %w", info.StorePath, hw.n, info.FileSize, ErrHashMismatch)
	}
	packed := *info
	packed.Compression = string(comp)
	packed.FileHash = fileHash
	packed.FileSize = uint64(hw.n)
	packed.URL = spec.NarURL(strings.TrimPrefix(fileHash, "sha256:"), comp)
	for _, k := range p.opts.SignKeys {
		if err := packed.AddSignature(k); err != nil {
			return PathArtifact{}, err
		}
	}
	return p.store(ctx, &packed, f, hw.n)
}

// store writes a path's blobs, then its manifest, then its tag. narFile
// holds the compressed NAR (size bytes), or is nil when the NAR blob is
// stored already.
func (p *pusher) store(ctx context.Context, info *narinfo.NarInfo, narFile *os.File, size int64) (PathArtifact, error) {
	var openNAR func() (io.ReadCloser, error)
	if narFile != nil {
		openNAR = func() (io.ReadCloser, error) { return io.NopCloser(io.NewSectionReader(narFile, 0, size)), nil }
	}
	return p.storeArtifact(ctx, info, openNAR, p.pushManifest)
}

// StoreArtifact stores the artifact of info in dst: the NAR blob read
// from openNAR (nil if dst has it already), the narinfo blob, the
// manifest, and last the tag.
func StoreArtifact(ctx context.Context, dst backend.Target, info *narinfo.NarInfo, openNAR func() (io.ReadCloser, error)) (PathArtifact, error) {
	p := &pusher{dst: dst}
	// The manifest's config: a registry refuses a manifest whose blobs it
	// lacks, and an image layout would hold a manifest others cannot copy.
	if err := p.pushBlob(ctx, emptyConfig, bytesOpener(emptyConfigData)); err != nil {
		return PathArtifact{}, err
	}
	return p.storeArtifact(ctx, info, openNAR, func(ctx context.Context, desc ocispec.Descriptor, data []byte, tag string) error {
		return dst.PushReference(ctx, desc, bytes.NewReader(data), tag)
	})
}

// storeArtifact stores a path's blobs through p, then its manifest and tag
// through pushManifest.
func (p *pusher) storeArtifact(ctx context.Context, info *narinfo.NarInfo, openNAR func() (io.ReadCloser, error),
	pushManifest func(context.Context, ocispec.Descriptor, []byte, string) error) (PathArtifact, error) {
	art, manifest, niData, err := NewPathArtifact(info)
	if err != nil {
		return PathArtifact{}, err
	}
	if openNAR != nil {
		if err := p.pushBlob(ctx, art.NAR, openNAR); err != nil {
			return PathArtifact{}, fmt.Errorf("%s: storing NAR: %w", info.StorePath, err)
		}
	}
	if err := p.pushBlob(ctx, art.NarInfo, bytesOpener(niData)); err != nil {
		return PathArtifact{}, fmt.Errorf("%s: storing narinfo: %w", info.StorePath, err)
	}
	if err := pushManifest(ctx, art.Manifest, manifest, spec.PathTag(info.StorePath)); err != nil {
		return PathArtifact{}, fmt.Errorf("%s: %w", info.StorePath, err)
	}
	return art, nil
}

func bytesOpener(data []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
}

// pushBlob stores a blob unless the target has it, retrying transient
// failures.
func (p *pusher) pushBlob(ctx context.Context, desc ocispec.Descriptor, open func() (io.ReadCloser, error)) error {
	return retryTransient(ctx, p.opts.Progress, "blob "+desc.Digest.String(), func() error {
		ok, err := p.dst.Exists(ctx, desc)
		if err != nil || ok {
			return err
		}
		rc, err := open()
		if err != nil {
			return err
		}
		defer rc.Close()
		err = p.dst.Push(ctx, desc, countingReader{rc, p.opts.Progress.transferCounter()})
		if errors.Is(err, errdef.ErrAlreadyExists) {
			return nil
		}
		return err
	})
}

// pushManifest stores a manifest and tags it: batched for layouts, one
// request for registries.
func (p *pusher) pushManifest(ctx context.Context, desc ocispec.Descriptor, data []byte, tag string) error {
	if p.batch == nil {
		return retryTransient(ctx, p.opts.Progress, "manifest "+tag, func() error {
			return p.dst.PushReference(ctx, desc, bytes.NewReader(data), tag)
		})
	}
	if err := p.dst.Push(ctx, desc, bytes.NewReader(data)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		return err
	}
	p.batch.add(desc, tag)
	return nil
}

// storeClosure writes the closure's own blobs and manifests, tag last.
func (p *pusher) storeClosure(ctx context.Context, cm ClosureManifests, tag string) error {
	if err := p.pushBlob(ctx, cm.CacheInfo.Descriptor, bytesOpener(cm.CacheInfo.Data)); err != nil {
		return err
	}
	for _, part := range cm.Parts {
		if err := p.pushBlob(ctx, part.Descriptor, bytesOpener(part.Data)); err != nil {
			return fmt.Errorf("storing closure part: %w", err)
		}
	}
	err := retryTransient(ctx, p.opts.Progress, "closure "+tag, func() error {
		return p.dst.PushReference(ctx, cm.Top.Descriptor, bytes.NewReader(cm.Top.Data), tag)
	})
	if err != nil {
		return fmt.Errorf("storing closure manifest: %w", err)
	}
	return nil
}

// storeClosureIndex writes a version 2 closure's cache-info blob and
// manifest, its parts, and last its top index under tag.
func (p *pusher) storeClosureIndex(ctx context.Context, ci ClosureIndex, tag string) error {
	blobs := ci.Blobs()
	for _, b := range blobs[:len(blobs)-1] {
		if err := p.pushBlob(ctx, b.Descriptor, bytesOpener(b.Data)); err != nil {
			return fmt.Errorf("storing closure %s: %w", b.Descriptor.ArtifactType, err)
		}
	}
	err := retryTransient(ctx, p.opts.Progress, "closure "+tag, func() error {
		return p.dst.PushReference(ctx, ci.Top.Descriptor, bytes.NewReader(ci.Top.Data), tag)
	})
	if err != nil {
		return fmt.Errorf("storing closure index: %w", err)
	}
	return nil
}

type hashingWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (hw *hashingWriter) Write(b []byte) (int, error) {
	n, err := hw.w.Write(b)
	hw.h.Write(b[:n])
	hw.n += int64(n)
	return n, err
}

// tagBatcher collects tags for a target that tags many at once cheaply,
// and writes them every flushInterval and at the end.
type tagBatcher struct {
	bt      backend.BatchTagger
	mu      sync.Mutex
	pending []backend.Tagged
	err     error
	stop    chan struct{}
	done    chan struct{}
}

const flushInterval = 500 * time.Millisecond

func newTagBatcher(bt backend.BatchTagger) *tagBatcher {
	b := &tagBatcher{bt: bt, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		t := time.NewTicker(flushInterval)
		defer t.Stop()
		for {
			select {
			case <-b.stop:
				return
			case <-t.C:
				b.flush(context.Background())
			}
		}
	}()
	return b
}

func (b *tagBatcher) add(desc ocispec.Descriptor, tag string) {
	b.mu.Lock()
	b.pending = append(b.pending, backend.Tagged{Descriptor: desc, Tag: tag})
	b.mu.Unlock()
}

func (b *tagBatcher) flush(ctx context.Context) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.pending) == 0 || b.err != nil {
		return
	}
	if err := b.bt.TagMany(ctx, b.pending); err != nil {
		b.err = err
		return
	}
	b.pending = nil
}

// close stops the background flushes and writes what is left.
func (b *tagBatcher) close(ctx context.Context) error {
	close(b.stop)
	<-b.done
	b.flush(ctx)
	return b.err
}
