package artifact

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"regexp"
	"slices"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/realisation"
	"github.com/nixoci/nixoci/spec"
)

// ClosureFile is a file artifact (SPEC.md section 12) a closure lists
// beside its paths (section 12.6): a realisation, build log, NAR listing
// or debug-info entry of one of them.
type ClosureFile struct {
	// StorePath is the closure's path it belongs to: a realisation's
	// output, a listing's or debug-info entry's path, for a log a path
	// naming its derivation as deriver.
	StorePath string
	// Artifact is the file artifact; nil for a realisation a writer has
	// yet to sign and store (Realisation).
	Artifact *FileArtifact
	// Realisation, if set, is the realisation Artifact is made from.
	Realisation *Realisation
}

// FileEntry is the descriptor by which a closure index lists cf: its
// manifest, artifact type and the store path it belongs to.
func FileEntry(cf ClosureFile) ocispec.Descriptor {
	return ocispec.Descriptor{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: cf.Artifact.Type,
		Digest:       cf.Artifact.Manifest.Digest,
		Size:         cf.Artifact.Manifest.Size,
		Annotations:  map[string]string{spec.AnnotationStorePath: cf.StorePath},
	}
}

// FileTags are the tags the file artifact fa is found by (SPEC.md
// section 12), from its annotations and, for a listing, which names no
// path of its own when uploaded, the store path it belongs to.
func FileTags(fa *FileArtifact, storePath string) ([]string, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s %s: %s: %w", fa.Type, fa.Manifest.Digest, fmt.Sprintf(format, args...), ErrNotArtifact)
	}
	a := fa.Annotations
	switch fa.Type {
	case spec.ArtifactTypeLog:
		drv := a[spec.AnnotationDrvPath]
		if err := realisation.CheckDrvName(path.Base(drv)); err != nil {
			return nil, bad("%v", err)
		}
		return []string{spec.LogTag(drv)}, nil
	case spec.ArtifactTypeRealisation:
		var tags []string
		if h := a[spec.AnnotationDrvHash]; h != "" {
			k, err := realisation.ParseHashKey(h + "!" + a[spec.AnnotationOutput])
			if err != nil {
				return nil, bad("%v", err)
			}
			tags = append(tags, spec.RealisationTag(k.String()))
		}
		if d := a[spec.AnnotationDrvPath]; d != "" {
			k, err := realisation.NewPathKey(path.Base(d), a[spec.AnnotationOutput])
			if err != nil {
				return nil, bad("%v", err)
			}
			tags = append(tags, spec.RealisationTag(k.String()))
		}
		if len(tags) == 0 {
			return nil, bad("no key")
		}
		return tags, nil
	case spec.ArtifactTypeListing:
		if !strings.HasPrefix(storePath, "/") {
			return nil, bad("no store path")
		}
		return []string{spec.ListingTag(spec.PathTag(storePath))}, nil
	case spec.ArtifactTypeDebugInfo:
		id := a[spec.AnnotationBuildID]
		if !buildID.MatchString(id) {
			return nil, bad("build id %q", id)
		}
		return []string{spec.DebugInfoTag(id)}, nil
	}
	return nil, bad("not a file artifact")
}

// FileFitsTag reports whether tag is one of the tags fa is found by (a
// listing, which names no path of its own, fits any listing tag).
func FileFitsTag(fa *FileArtifact, tag string) bool {
	if fa.Type == spec.ArtifactTypeListing {
		return lsTitle.MatchString(tag)
	}
	tags, err := FileTags(fa, "")
	return err == nil && slices.Contains(tags, tag)
}

var (
	buildID    = regexp.MustCompile(`^[0-9a-f]{40}$`)
	debugTitle = regexp.MustCompile(`^debuginfo/[0-9a-f]{40}(\.debug)?$`)
	lsTitle    = regexp.MustCompile(`^[0-9a-df-np-sv-z]{32}\.ls$`)
)

// checkFileTitle checks that a file artifact's layer is titled with a
// binary-cache file name of its kind, so that a pull (ours, or `oras
// pull`) writes it only where `nix copy --to file://` would.
func checkFileTitle(artifactType string, f File) error {
	ok := false
	switch artifactType {
	case spec.ArtifactTypeLog:
		name, found := strings.CutPrefix(f.Title, "log/")
		ok = found && f.MediaType == spec.MediaTypeLog && realisation.CheckDrvName(name) == nil
	case spec.ArtifactTypeRealisation:
		switch f.MediaType {
		case spec.MediaTypeRealisation:
			id, found := strings.CutPrefix(f.Title, "realisations/")
			id, suffix := strings.CutSuffix(id, ".doi")
			if found && suffix {
				k, err := realisation.ParseHashKey(id)
				ok = err == nil && k.File() == f.Title
			}
		case spec.MediaTypeBuildTrace:
			rest, found := strings.CutPrefix(f.Title, "build-trace-v2/")
			drv, out, _ := strings.Cut(rest, "/")
			out, suffix := strings.CutSuffix(out, ".doi")
			if found && suffix {
				k, err := realisation.NewPathKey(drv, out)
				ok = err == nil && k.File() == f.Title
			}
		}
	case spec.ArtifactTypeListing:
		ok = f.MediaType == spec.MediaTypeListing && lsTitle.MatchString(f.Title)
	case spec.ArtifactTypeDebugInfo:
		ok = f.MediaType == spec.MediaTypeDebugInfo && debugTitle.MatchString(f.Title)
	}
	if !ok {
		return fmt.Errorf("%s layer %s (%s) has title %q, which is not a binary-cache file name of its kind: %w", artifactType, f.Digest, f.MediaType, f.Title, ErrNotArtifact)
	}
	return nil
}

// FetchClosureFile reads the file artifact a closure entry names and
// checks it: its type is the entry's, its layers are titled as their
// kind's files, and its tags follow from it.
func FetchClosureFile(ctx context.Context, t backend.Target, entry ocispec.Descriptor) (ClosureFile, error) {
	data, err := backend.FetchAll(ctx, t, entry, backend.MaxManifestRead)
	if err != nil {
		return ClosureFile{}, fmt.Errorf("file artifact %s: %w", entry.Digest, err)
	}
	fa, err := ParseFileArtifact(plainDescriptor(entry), data, entry.ArtifactType)
	if err != nil {
		return ClosureFile{}, err
	}
	cf := ClosureFile{StorePath: entry.Annotations[spec.AnnotationStorePath], Artifact: fa}
	for _, f := range fa.Files {
		if err := checkFileTitle(fa.Type, f); err != nil {
			return ClosureFile{}, err
		}
	}
	if _, err := FileTags(fa, cf.StorePath); err != nil {
		return ClosureFile{}, err
	}
	return cf, nil
}

// ClosureFiles reads the file artifacts c lists, jobs at a time.
func ClosureFiles(ctx context.Context, t backend.Target, c *Closure, jobs int) ([]ClosureFile, error) {
	files := make([]ClosureFile, len(c.Files))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(jobs, 1))
	for i, e := range c.Files {
		g.Go(func() (err error) {
			files[i], err = FetchClosureFile(gctx, t, e)
			return err
		})
	}
	return files, g.Wait()
}

// storeFiles stores the files of a push in p.dst, each under its tags:
// a realisation signed by the push's keys and merged with what the
// target holds under its keys (one naming another output path is left
// as it is, with a warning, and not listed); any other file unless the
// target holds it under its tag already; NetworkJobs at once. It returns
// them stored, in order.
func (p *pusher) storeFiles(ctx context.Context, files []ClosureFile) ([]ClosureFile, error) {
	if len(files) == 0 {
		return nil, nil
	}
	jobs := p.opts.NetworkJobs
	if jobs <= 0 {
		jobs = DefaultNetworkJobs
	}
	stored := make([]ClosureFile, len(files))
	kept := make([]bool, len(files))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	for i, cf := range files {
		g.Go(func() (err error) {
			if cf.Realisation != nil {
				stored[i], kept[i], err = p.storeRealisation(gctx, cf)
			} else {
				stored[i], kept[i], err = p.storeOtherFile(gctx, cf)
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := make([]ClosureFile, 0, len(files))
	for i, cf := range stored {
		if kept[i] {
			out = append(out, cf)
		}
	}
	return out, nil
}

func (p *pusher) storeRealisation(ctx context.Context, cf ClosureFile) (ClosureFile, bool, error) {
	rl := cf.Realisation.clone()
	for _, k := range p.opts.SignKeys {
		if rl.V1 != nil {
			if err := rl.V1.Sign(k); err != nil {
				return ClosureFile{}, false, err
			}
		}
		if rl.V2 != nil {
			if err := rl.V2.Sign(*rl.PathKey, k); err != nil {
				return ClosureFile{}, false, err
			}
		}
	}
	for _, tag := range rl.Tags() {
		fa, err := FetchFileArtifact(ctx, p.dst, tag, spec.ArtifactTypeRealisation)
		if isAbsent(err) {
			continue
		} else if err != nil {
			return ClosureFile{}, false, fmt.Errorf("realisation of %s: %w", rl.OutPath, err)
		}
		old, err := ReadRealisation(ctx, p.dst, fa)
		if errors.Is(err, ErrNotArtifact) {
			continue // replaced by a readable one
		} else if err != nil {
			return ClosureFile{}, false, err
		}
		if old.OutPath != rl.OutPath {
			slog.Warn("the target holds a realisation of the same derivation output naming another path; it is kept, and the closure does not list this one",
				"output", rl.OutPath, "stored", old.OutPath)
			return ClosureFile{}, false, nil
		}
		rl = MergeRealisations(old, rl)
	}
	fa, err := rl.Artifact()
	if err != nil {
		return ClosureFile{}, false, err
	}
	if err := StoreFileArtifact(ctx, p.dst, fa, rl.Tags()...); err != nil {
		return ClosureFile{}, false, fmt.Errorf("realisation of %s: %w", rl.OutPath, err)
	}
	return ClosureFile{StorePath: cf.StorePath, Artifact: fa, Realisation: rl}, true, nil
}

func (p *pusher) storeOtherFile(ctx context.Context, cf ClosureFile) (ClosureFile, bool, error) {
	tags, err := FileTags(cf.Artifact, cf.StorePath)
	if err != nil {
		return ClosureFile{}, false, err
	}
	if fa, err := FetchFileArtifact(ctx, p.dst, tags[0], cf.Artifact.Type); err == nil {
		if stored, err := FileTags(fa, cf.StorePath); err == nil && slices.Equal(stored, tags) {
			return ClosureFile{StorePath: cf.StorePath, Artifact: fa}, true, nil
		}
	} else if !isAbsent(err) {
		return ClosureFile{}, false, err
	}
	if err := StoreFileArtifact(ctx, p.dst, cf.Artifact, tags...); err != nil {
		return ClosureFile{}, false, fmt.Errorf("%s of %s: %w", cf.Artifact.Type, cf.StorePath, err)
	}
	return cf, true, nil
}

// isAbsent: err says a tag names nothing, or nothing of the kind asked.
func isAbsent(err error) bool {
	return errors.Is(err, errdef.ErrNotFound) || errors.Is(err, ErrNotArtifact)
}
