package artifact

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/internal/countio"
	"github.com/nixoci/nixoci/spec"
)

// PullOptions configure Pull. The zero value is usable.
type PullOptions struct {
	// Jobs is how many blobs are fetched at once; default
	// DefaultNetworkJobs (a pull waits on the network, and enough requests
	// in flight hide a remote registry's latency).
	Jobs int
	// Progress, if set, is updated as work is done.
	Progress *Progress
}

// PullResult describes a pull.
type PullResult struct {
	Closure *Closure
	Written int // files written
	Present int // files already there with the right content
}

// fileKinds maps the media type of a file artifact's layer to its kind.
var fileKinds = map[string]string{
	spec.MediaTypeLog:         spec.ArtifactTypeLog,
	spec.MediaTypeRealisation: spec.ArtifactTypeRealisation,
	spec.MediaTypeBuildTrace:  spec.ArtifactTypeRealisation,
	spec.MediaTypeListing:     spec.ArtifactTypeListing,
	spec.MediaTypeDebugInfo:   spec.ArtifactTypeDebugInfo,
}

// isCacheFileName reports whether a layer title names a file of a binary
// cache directory: nix-cache-info, <hash part>.narinfo or
// nar/<52 nix-base32 chars>.nar[.xz|.zst].
func isCacheFileName(title string) bool {
	if title == "nix-cache-info" {
		return true
	}
	if h, ok := strings.CutSuffix(title, ".narinfo"); ok {
		return spec.IsHashPart(h)
	}
	name, ok := strings.CutPrefix(title, "nar/")
	if !ok || len(name) < 56 || name[52:56] != ".nar" || !spec.IsNix32(name[:52]) {
		return false
	}
	switch name[56:] {
	case "", ".xz", ".zst":
		return true
	}
	return false
}

// Pull writes the closure that reference names in src into dir as a Nix
// binary cache directory (`nix copy --from file://DIR`), with the
// realisations, build logs, listings and debug-info entries it lists
// where `nix copy --to file://DIR` writes them. Every blob is
// verified against its digest while it streams to a temporary file, which
// is renamed into place only when complete. NARs are written first, then
// narinfos, then the other files, then nix-cache-info, so an interrupted
// pull never leaves a narinfo pointing at a missing NAR, nor a
// realisation naming a missing path. Files already present with the right
// content are kept.
func Pull(ctx context.Context, src backend.Target, reference, dir string, opts PullOptions) (*PullResult, error) {
	c, err := ReadClosure(ctx, src, reference)
	if err != nil {
		return nil, err
	}
	if opts.Jobs <= 0 {
		opts.Jobs = DefaultNetworkJobs
	}
	layers, err := BinaryCacheLayers(ctx, src, c, opts.Jobs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", reference, err)
	}
	var nars, narinfos, files, last []ocispec.Descriptor
	for _, l := range layers {
		title := l.Annotations[spec.AnnotationTitle]
		if kind, ok := fileKinds[l.MediaType]; ok {
			// Titles checked by their kind when read (BinaryCacheLayers).
			if err := checkFileTitle(kind, File{Title: title, MediaType: l.MediaType, Digest: l.Digest}); err != nil {
				return nil, fmt.Errorf("%s: %w", reference, err)
			}
			files = append(files, l)
			continue
		}
		if !isCacheFileName(title) {
			return nil, fmt.Errorf("%s: layer %s has title %q, which is not a binary-cache file name: %w", reference, l.Digest, title, ErrNotArtifact)
		}
		switch {
		case title == "nix-cache-info":
			last = append(last, l)
		case l.MediaType == spec.MediaTypeNarInfo:
			narinfos = append(narinfos, l)
		default:
			nars = append(nars, l)
		}
	}
	for _, l := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, filepath.FromSlash(l.Annotations[spec.AnnotationTitle]))), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "nar"), 0o755); err != nil {
		return nil, err
	}
	if opts.Progress != nil {
		opts.Progress.PathsTotal.Store(int64(len(narinfos)))
	}
	res := &PullResult{Closure: c}
	var counts [2]int64
	// Realisations after the narinfos of the paths they name.
	for _, wave := range [][]ocispec.Descriptor{nars, narinfos, files, last} {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(opts.Jobs)
		results := make([]bool, len(wave))
		for i, l := range wave {
			g.Go(func() error {
				wrote, err := pullFile(gctx, src, l, dir, opts.Progress)
				results[i] = wrote
				if err == nil && l.MediaType == spec.MediaTypeNarInfo && opts.Progress != nil {
					opts.Progress.PathsDone.Add(1)
				}
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		for _, w := range results {
			if w {
				counts[0]++
			} else {
				counts[1]++
			}
		}
	}
	res.Written, res.Present = int(counts[0]), int(counts[1])
	return res, nil
}

// pullFile writes one blob to dir/<title>; it reports whether it wrote.
func pullFile(ctx context.Context, src backend.Target, desc ocispec.Descriptor, dir string, progress *Progress) (bool, error) {
	title := desc.Annotations[spec.AnnotationTitle]
	dst := filepath.Join(dir, filepath.FromSlash(title))
	if ok, err := fileHasDigest(dst, desc); err != nil {
		return false, err
	} else if ok {
		return false, nil
	}
	rc, err := src.Fetch(ctx, desc)
	if err != nil {
		return false, fmt.Errorf("fetching %s (%s): %w", title, desc.Digest, err)
	}
	vr, err := backend.VerifyReader(rc, desc)
	if err != nil {
		return false, fmt.Errorf("%s: %w", title, err)
	}
	defer vr.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".part-*")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	_, err = io.Copy(tmp, countio.Reader{R: vr, N: progress.transferCounter()})
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, ErrHashMismatch) {
		return false, fmt.Errorf("%s: corrupt or truncated blob: %w", title, err)
	} else if err != nil {
		return false, fmt.Errorf("%s (%s): %w", title, desc.Digest, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return false, err
	}
	return true, os.Rename(tmp.Name(), dst)
}

// fileHasDigest reports whether path exists with desc's size and digest.
func fileHasDigest(path string, desc ocispec.Descriptor) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() != desc.Size {
		return false, err
	}
	d, err := digest.SHA256.FromReader(f)
	return err == nil && d == desc.Digest, err
}
