package artifact

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/internal/countio"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// PushOptions configure Push. The zero value is usable.
type PushOptions struct {
	// Tag names the closure; default spec.DefaultClosureTag of the first root.
	Tag string
	// Jobs is how many NARs are dumped and compressed at once (work for
	// the CPU); default backend.DefaultJobs(). It never changes what is
	// written.
	Jobs int
	// NetworkJobs is how many paths are checked or uploaded at once
	// (existence checks and uploads wait on the network, not the CPU; an
	// upload sends a path's two blobs together); default
	// DefaultNetworkJobs. It never changes what is written.
	NetworkJobs int
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
	// Record says what the push record stored after the closure tag holds
	// (SPEC.md section 10.1).
	Record RecordOptions
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
	// Files are the file artifacts stored with the closure (realisations,
	// build logs; SPEC.md section 12.6), which a version 2 closure lists.
	Files []ClosureFile
}

// Push stores the closures of the store paths args name (see
// Source.ResolveRoot) in dst and tags the closure. Store paths whose
// artifact exists in dst are reused without reading their NAR. Every
// blob is stored before the manifest naming it, and every path before the
// closure; the closure tag is written last, and only if everything
// succeeded, followed by a push record (SPEC.md section 10.1). If a
// garbage collector runs meanwhile, what it deleted of the closure is
// stored again (see gcGuard).
func Push(ctx context.Context, dst backend.Target, src Source, args []string, opts PushOptions) (*PushResult, error) {
	guard := newGCGuard(dst)
	roots, tag, err := resolveRoots(src, args, opts.Tag)
	if err != nil {
		return nil, err
	}
	p := &pusher{dst: dst, src: src, opts: opts}
	if p.opts.Jobs <= 0 {
		p.opts.Jobs = backend.DefaultJobs()
	}
	stored := func() (*Closure, error) { return nil, nil }
	if p.mayBeUnchanged() {
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stored = p.storedClosure(sctx, tag)
	}
	infos, err := src.Closure(ctx, roots)
	if err != nil {
		return nil, fmt.Errorf("reading closure from %s: %w", src, err)
	}
	if fs, ok := src.(FileSource); ok {
		if p.files, err = fs.Files(ctx, infos); err != nil {
			return nil, fmt.Errorf("reading realisations and logs from %s: %w", src, err)
		}
	}
	if res, ok, err := p.unchanged(roots, tag, infos, stored); err != nil {
		return nil, err
	} else if ok {
		if done, err := p.gcFinishUnchanged(ctx, guard, res); err != nil || done {
			return res, err
		}
		// A collection ran meanwhile: push in full, storing again what it deleted.
	}
	res := &PushResult{Roots: roots, Tag: tag}
	if res.Paths, res.Packed, err = p.pushPathsGuarded(ctx, guard, infos); err != nil {
		return nil, err
	}
	res.Reused = len(res.Paths) - res.Packed
	if err := p.gcCheckPaths(ctx, guard, infos, res); err != nil {
		return nil, err
	}
	if err := p.storeClosureGuarded(ctx, guard, infos, res); err != nil {
		return nil, err
	}
	if err := p.gcFinish(ctx, guard, infos, res); err != nil {
		return nil, err
	}
	return res, nil
}

// storeClosureOf stores the closure of res.Paths in the format version
// asked for, tagged res.Tag last, and records what it stored in res.
func (p *pusher) storeClosureOf(ctx context.Context, res *PushResult) error {
	storeDir := path.Dir(res.Roots[0])
	files, err := p.storeFiles(ctx, p.files)
	if err != nil {
		return err
	}
	res.Files = files
	switch p.opts.ClosureVersion {
	case spec.Version:
		cm, err := NewClosureManifests(res.Roots, res.Paths, storeDir, p.opts.ManifestLimit)
		if err != nil {
			return err
		}
		if err := p.storeClosure(ctx, cm, res.Tag); err != nil {
			return err
		}
		res.Manifest, res.Closure, res.Parts = cm, cm.Top.Descriptor, len(cm.Parts)
	case "", spec.ClosureVersion:
		ci, err := NewClosureIndexWithFiles(res.Roots, res.Paths, files, storeDir, p.opts.ManifestLimit)
		if err != nil {
			return err
		}
		if err := p.storeClosureIndex(ctx, ci, res.Tag); err != nil {
			return err
		}
		res.Index, res.Closure, res.Parts = ci, ci.Top.Descriptor, len(ci.Parts)
	default:
		return fmt.Errorf("closure format version %q: this nixoci writes %q and %q", p.opts.ClosureVersion, spec.ClosureVersion, spec.Version)
	}
	return nil
}

// resolveRoots turns args into sorted, distinct store paths and names the
// closure's tag (tag, or the default tag of the first root).
func resolveRoots(src Source, args []string, tag string) ([]string, string, error) {
	if len(args) == 0 {
		return nil, "", errors.New("no store paths given")
	}
	var roots []string
	for _, a := range args {
		r, err := src.ResolveRoot(a)
		if err != nil {
			return nil, "", err
		}
		roots = append(roots, r)
	}
	if tag == "" {
		var err error
		if tag, err = spec.DefaultClosureTag(roots[0]); err != nil {
			return nil, "", err
		}
	}
	if !spec.ValidTag(tag) {
		return nil, "", fmt.Errorf("invalid tag %q: tags are 1-128 characters [a-zA-Z0-9_.-], not starting with . or -", tag)
	}
	slices.Sort(roots)
	return slices.Compact(roots), tag, nil
}

// pushPaths stores (or reuses) every path of infos, p.opts.Jobs at once,
// and returns their artifacts sorted by store path and how many were
// packed now.
func (p *pusher) pushPaths(ctx context.Context, infos []*narinfo.NarInfo) ([]PathArtifact, int, error) {
	if p.opts.Progress != nil {
		p.opts.Progress.PathsTotal.Store(int64(len(infos)))
	}
	if err := p.pushBlob(ctx, spec.EmptyConfig, bytes.NewReader(spec.EmptyConfigData)); err != nil {
		return nil, 0, err
	}
	if bt, ok := p.dst.(backend.BatchTagger); ok {
		p.batch = newTagBatcher(bt)
	}
	arts, packed, err := p.pipeline(ctx, infos)
	if p.batch != nil {
		// Tag what was completed even after a failure: those paths are
		// whole, and a re-run will not redo them.
		if ferr := p.batch.close(ctx); err == nil {
			err = ferr
		}
	}
	if err != nil {
		return nil, 0, err
	}
	sort.Slice(arts, func(i, j int) bool { return arts[i].Info.StorePath < arts[j].Info.StorePath })
	return arts, packed, nil
}

// DefaultNetworkJobs is the default bound on the paths a push checks or
// uploads at once (an upload sends a path's NAR and narinfo blobs
// together, so up to twice as many requests are in flight): enough to
// hide a remote registry's latency (at 20 ms a round trip, 16 at once keep
// a path a millisecond), few enough for any registry's rate limits.
const DefaultNetworkJobs = 16

// pipeline pushes every path of infos in two overlapping stages: the
// network checks which paths the target has (and re-signs those that need
// it), up to NetworkJobs at once, largest path first; each path found
// missing goes at once to the cores, where it is dumped and compressed
// (Jobs at once, so roughly largest first: the longest NAR does not run
// alone at the end), and is uploaded as soon as it is packed, again
// within NetworkJobs, while the cores pack the next. The checks do not
// wait for each other before packing starts: with a registry far away
// they would add a round trip per NetworkJobs paths before the first NAR
// is read. At most 2×NetworkJobs packed NARs wait for upload in
// temporary files.
func (p *pusher) pipeline(ctx context.Context, infos []*narinfo.NarInfo) ([]PathArtifact, int, error) {
	netJobs := p.opts.NetworkJobs
	if netJobs <= 0 {
		netJobs = DefaultNetworkJobs
	}
	net := make(chan struct{}, netJobs)
	waiting := make(chan struct{}, 2*netJobs)
	acquire := func(ctx context.Context, sem chan struct{}) (func(), error) {
		select {
		case sem <- struct{}{}:
			return func() { <-sem }, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	order := make([]int, len(infos))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return infos[order[a]].NarSize > infos[order[b]].NarSize })

	arts := make([]PathArtifact, len(infos))
	missing := make(chan int, len(infos)) // never blocks a check
	var packed atomic.Int64
	g, gctx := errgroup.WithContext(ctx)

	// Stage 1: what does the target have?
	g.Go(func() error {
		defer close(missing)
		var checks sync.WaitGroup
		defer checks.Wait()
		for _, i := range order {
			info := infos[i]
			release, err := acquire(gctx, net)
			if err != nil {
				// A failed check or the caller ended gctx: either way the
				// push must not look complete with paths unchecked.
				return err
			}
			checks.Add(1)
			g.Go(func() error {
				defer checks.Done()
				defer release()
				existing, err := FetchPath(gctx, p.dst, info.StorePath)
				switch {
				case errors.Is(err, errdef.ErrNotFound):
					missing <- i
					return nil
				case err != nil:
					return err
				}
				if arts[i], err = p.reuse(gctx, existing, info); err != nil {
					return err
				}
				p.opts.Progress.pathDone(info.NarSize, true)
				return nil
			})
		}
		return nil
	})

	// Stage 2: pack what is missing and upload each as soon as it is
	// packed.
	for range max(min(p.opts.Jobs, len(infos)), 1) {
		g.Go(func() error {
			for i := range missing {
				info := infos[i]
				done, err := acquire(gctx, waiting)
				if err != nil {
					return err
				}
				packedInfo, f, n, err := p.pack(gctx, info)
				if err != nil {
					done()
					return err
				}
				packed.Add(1)
				g.Go(func() error {
					defer done()
					defer f.Close()
					release, err := acquire(gctx, net)
					if err != nil {
						return err
					}
					defer release()
					if arts[i], err = p.store(gctx, packedInfo, f, n); err != nil {
						return err
					}
					p.opts.Progress.pathDone(info.NarSize, false)
					return nil
				})
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, 0, err
	}
	return arts, int(packed.Load()), nil
}

type pusher struct {
	dst   backend.Target
	src   Source
	opts  PushOptions
	batch *tagBatcher
	files []ClosureFile // from the source, to store with the closure
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

// pack reads the path's NAR from the source into a temporary file and
// returns its narinfo as stored (signed, with the compressed file's hash
// and size) with the file, which the caller closes, and its size.
func (p *pusher) pack(ctx context.Context, info *narinfo.NarInfo) (*narinfo.NarInfo, *os.File, int64, error) {
	f, err := anonymousTempFile(p.opts.TempDir)
	if err != nil {
		return nil, nil, 0, err
	}
	packed, n, err := p.packInto(ctx, info, f)
	if err != nil {
		f.Close()
		return nil, nil, 0, err
	}
	return packed, f, n, nil
}

func (p *pusher) packInto(ctx context.Context, info *narinfo.NarInfo, f *os.File) (*narinfo.NarInfo, int64, error) {
	bw := bufio.NewWriterSize(f, 1<<20)
	h := sha256.New()
	var size atomic.Int64
	comp, err := p.src.WriteNAR(ctx, info, countio.Writer{W: io.MultiWriter(bw, h), N: &size})
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return nil, 0, err
	}
	fileHash, err := narinfo.HashFromDigest(h.Sum(nil))
	if err != nil {
		return nil, 0, err
	}
	if info.FileHash != "" && info.FileHash != fileHash {
		return nil, 0, fmt.Errorf("%s: compressed NAR is %s but its narinfo says FileHash %s: %w", info.StorePath, fileHash, info.FileHash, ErrHashMismatch)
	}
	n := size.Load()
	if info.FileSize != 0 && info.FileSize != uint64(n) {
		return nil, 0, fmt.Errorf("%s: compressed NAR is %d bytes but its narinfo says FileSize %d: %w", info.StorePath, n, info.FileSize, ErrHashMismatch)
	}
	packed := *info
	packed.Compression = string(comp)
	packed.FileHash = fileHash
	packed.FileSize = uint64(n)
	packed.URL = spec.NarURL(strings.TrimPrefix(fileHash, "sha256:"), comp)
	for _, k := range p.opts.SignKeys {
		if err := packed.AddSignature(k); err != nil {
			return nil, 0, err
		}
	}
	return &packed, n, nil
}

// store writes a path's blobs, then its manifest, then its tag. narFile
// holds the compressed NAR (size bytes), or is nil when the NAR blob is
// stored already.
func (p *pusher) store(ctx context.Context, info *narinfo.NarInfo, narFile *os.File, size int64) (PathArtifact, error) {
	var nar io.Reader
	if narFile != nil {
		nar = io.NewSectionReader(narFile, 0, size)
	}
	return p.storeArtifact(ctx, info, nar, p.pushManifest)
}

// StoreArtifact stores the artifact of info in dst: the NAR blob read
// from openNAR (nil if dst has it already; an upload that fails is sent
// again if what openNAR returns can seek), the narinfo blob, the manifest,
// and last the tag.
func StoreArtifact(ctx context.Context, dst backend.Target, info *narinfo.NarInfo, openNAR func() (io.ReadCloser, error)) (PathArtifact, error) {
	var nar io.Reader
	if openNAR != nil {
		rc, err := openNAR()
		if err != nil {
			return PathArtifact{}, err
		}
		defer rc.Close()
		nar = rc
	}
	p := &pusher{dst: dst}
	// The manifest's config: a registry refuses a manifest whose blobs it
	// lacks, and an image layout would hold a manifest others cannot copy.
	if err := p.pushBlob(ctx, spec.EmptyConfig, bytes.NewReader(spec.EmptyConfigData)); err != nil {
		return PathArtifact{}, err
	}
	return p.storeArtifact(ctx, info, nar, func(ctx context.Context, desc ocispec.Descriptor, data []byte, tag string) error {
		return dst.PushReference(ctx, desc, bytes.NewReader(data), tag)
	})
}

// storeArtifact stores a path's blobs through p, then its manifest and tag
// through pushManifest.
func (p *pusher) storeArtifact(ctx context.Context, info *narinfo.NarInfo, nar io.Reader,
	pushManifest func(context.Context, ocispec.Descriptor, []byte, string) error) (PathArtifact, error) {
	art, manifest, niData, err := NewPathArtifact(info)
	if err != nil {
		return PathArtifact{}, err
	}
	// The two blobs go at once: each is a few round trips (check,
	// start, send), which a registry far away makes the most of a small
	// path's time.
	g, gctx := errgroup.WithContext(ctx)
	if nar != nil {
		g.Go(func() error {
			if err := p.pushBlob(gctx, art.NAR, nar); err != nil {
				return fmt.Errorf("%s: storing NAR: %w", info.StorePath, err)
			}
			return nil
		})
	}
	g.Go(func() error {
		if err := p.pushBlob(gctx, art.NarInfo, bytes.NewReader(niData)); err != nil {
			return fmt.Errorf("%s: storing narinfo: %w", info.StorePath, err)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return PathArtifact{}, err
	}
	if err := pushManifest(ctx, art.Manifest, manifest, spec.PathTag(info.StorePath)); err != nil {
		return PathArtifact{}, fmt.Errorf("%s: %w", info.StorePath, err)
	}
	return art, nil
}

// pushBlob stores a blob unless the target has it, counting what it sends.
func (p *pusher) pushBlob(ctx context.Context, desc ocispec.Descriptor, content io.Reader) error {
	return backend.PushBlob(ctx, p.dst, desc, countio.Reader{R: content, N: p.opts.Progress.transferCounter()})
}

// pushManifest stores a manifest and tags it: batched for layouts, one
// request for registries.
func (p *pusher) pushManifest(ctx context.Context, desc ocispec.Descriptor, data []byte, tag string) error {
	if p.batch == nil {
		return p.dst.PushReference(ctx, desc, bytes.NewReader(data), tag)
	}
	if err := p.dst.Push(ctx, desc, bytes.NewReader(data)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		return err
	}
	p.batch.add(desc, tag)
	return nil
}

// storeClosure writes the closure's own blobs and manifests, tag last.
func (p *pusher) storeClosure(ctx context.Context, cm ClosureManifests, tag string) error {
	if err := p.pushBlob(ctx, cm.CacheInfo.Descriptor, bytes.NewReader(cm.CacheInfo.Data)); err != nil {
		return err
	}
	for _, part := range cm.Parts {
		if err := p.pushBlob(ctx, part.Descriptor, bytes.NewReader(part.Data)); err != nil {
			return fmt.Errorf("storing closure part: %w", err)
		}
	}
	if err := p.dst.PushReference(ctx, cm.Top.Descriptor, bytes.NewReader(cm.Top.Data), tag); err != nil {
		return fmt.Errorf("storing closure manifest: %w", err)
	}
	return nil
}

// storeClosureIndex writes a version 2 closure's cache-info blob and
// manifest, its parts, and last its top index under tag.
func (p *pusher) storeClosureIndex(ctx context.Context, ci ClosureIndex, tag string) error {
	blobs := ci.Blobs()
	for _, b := range blobs[:len(blobs)-1] {
		if err := p.pushBlob(ctx, b.Descriptor, bytes.NewReader(b.Data)); err != nil {
			return fmt.Errorf("storing closure %s: %w", b.Descriptor.ArtifactType, err)
		}
	}
	if err := p.dst.PushReference(ctx, ci.Top.Descriptor, bytes.NewReader(ci.Top.Data), tag); err != nil {
		return fmt.Errorf("storing closure index: %w", err)
	}
	return nil
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
