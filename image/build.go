package image

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// Options configure Build. The zero value makes an image with no
// entrypoint, gzip layers and at most spec.DefaultMaxLayers layers.
type Options struct {
	Entrypoint []string
	Cmd        []string
	// Env holds KEY=VALUE entries; PATH defaults to the link roots' bin
	// directories.
	Env        []string
	WorkingDir string
	// User is "UID:GID" (numeric); the user is added to /etc/passwd.
	User string
	// LinkRoots are store paths whose top-level directories are linked
	// into / (e.g. /bin/hello). Each must be in a closure; with several
	// platforms, each image links those in its closures.
	LinkRoots []string
	// MaxLayers caps the layers; default spec.DefaultMaxLayers. Larger
	// closures keep their largest paths in layers of their own and group
	// the rest.
	MaxLayers   int
	Compression spec.LayerCompression
	// DefaultCmd gives an image without Entrypoint or Cmd a Cmd picked
	// from its link roots: the first one's main program (bin/<name
	// without version>), else the only program in /bin, else /bin/sh.
	DefaultCmd bool
	// NixSnapshotter also writes the nix-snapshotter form, tagged
	// "<tag>-nix" (an index too, with several platforms).
	NixSnapshotter bool
	// BuildpacksStack makes the image a Cloud Native Buildpacks stack with
	// this stack ID (label io.buildpacks.stack.id, user and group 1000).
	BuildpacksStack string
	// BuildpacksBuild makes the Buildpacks image a build image rather
	// than a run image.
	BuildpacksBuild bool
	Labels          map[string]string
	// Created, if set, is the image's creation time, in its config and
	// each history entry, and the Buildpacks release date; by default
	// images carry no time, so that digests never depend on the clock.
	Created time.Time
	// Platforms, for an image of closures of one system, is at most one
	// platform, which it is labelled with whatever its paths record (a
	// cross-compiled closure records the system it was built on). By
	// default an image's platform is its paths' System
	// (spec.SystemPlatform), or the host's if none records one. For
	// closures of several systems it selects the platforms to make; by
	// default all (SPEC.md section 8.5).
	Platforms []ocispec.Platform
	// Jobs is how many layers are converted (and store-path manifests
	// read) at once; default backend.DefaultJobs().
	Jobs    int
	TempDir string
}

// Result describes what Build stored.
type Result struct {
	Tag string
	// Manifest is what Tag names: the image manifest, or the image index
	// when there are several platforms.
	Manifest ocispec.Descriptor
	// ManifestData is that manifest or index as stored.
	ManifestData []byte
	// Images are the platforms' images, in the index's order (one
	// without an index).
	Images    []Image
	Converted int // store-path layers converted now
	Reused    int // store-path layers found stored
	// SnapshotterTag and Snapshotter describe the nix-snapshotter form
	// (a manifest, or an index of one per platform).
	SnapshotterTag string
	Snapshotter    *ocispec.Descriptor
}

// Image is the image of one platform.
type Image struct {
	Platform ocispec.Platform
	// System is the Nix system its paths record ("" if none).
	System string
	// Closures are the references of the closures it was made from.
	Closures []string
	Manifest ocispec.Descriptor
	Config   ocispec.Descriptor
	Layers   []Layer // store-path layers, then the root layer
	// Snapshotter is its nix-snapshotter form, if asked for.
	Snapshotter *ocispec.Descriptor
}

// Build makes an image of the closure that closureRef names in src and
// tags it in dst (stores it untagged if tag is ""). NAR blobs are read
// from src; layers are written to dst (and reused from it).
func Build(ctx context.Context, src backend.Target, closureRef string, dst backend.Target, tag string, opts Options) (*Result, error) {
	return BuildUnion(ctx, src, []string{closureRef}, dst, tag, opts)
}

// BuildUnion makes an image of the union of several closures (a path in
// more than one is one layer). Closures of several systems make one
// image per system, each the union of that system's closures, under an
// image index; closures that record no system then have no place and
// are an error (ErrNoSystem).
func BuildUnion(ctx context.Context, src backend.Target, closureRefs []string, dst backend.Target, tag string, opts Options) (*Result, error) {
	return build(ctx, sourcesIn(src, closureRefs), dst, tag, opts, groupUnion)
}

// BuildPlatforms makes one image of each closure, each for the system
// its paths record, and tags an image index over them; one closure
// makes a plain image, as Build. Two closures of one system
// (ErrSameSystem), one given twice (ErrSameClosure) or one whose system
// is unknown (ErrNoSystem) are errors.
func BuildPlatforms(ctx context.Context, src backend.Target, closureRefs []string, dst backend.Target, tag string, opts Options) (*Result, error) {
	return BuildPlatformsFrom(ctx, sourcesIn(src, closureRefs), dst, tag, opts)
}

// BuildPlatformsFrom is BuildPlatforms of closures in different targets
// (per-system registries or repositories, say): each closure is read,
// and its paths' NARs, from its own target; a layer an image made there
// left is copied (mounted within one registry) instead of converted
// again. Every layer ends up in dst.
func BuildPlatformsFrom(ctx context.Context, sources []Source, dst backend.Target, tag string, opts Options) (*Result, error) {
	return build(ctx, sources, dst, tag, opts, groupEach)
}

// build plans the images of the closures sources names, grouped into
// images by group, then makes them: nothing is written until the plan
// is checked, and the tag is written last.
func build(ctx context.Context, sources []Source, dst backend.Target, tag string, opts Options,
	group func([]closureRead) ([][]closureRead, error)) (*Result, error) {
	opts, err := opts.withDefaults(tag)
	if err != nil {
		return nil, err
	}
	plans, srcs, roots, err := planImages(ctx, sources, opts, group)
	if err != nil {
		return nil, err
	}
	units := make([][][]artifact.PathArtifact, len(plans))
	for i, p := range plans {
		units[i] = groupPaths(p.paths, opts.MaxLayers-1)
	}
	layers, res, err := ensureLayers(ctx, srcs, dst, units, opts)
	if err != nil {
		return nil, err
	}
	res.Tag = tag
	var stored []storedImage
	for i, p := range plans {
		cfg := imageConfig(opts, p.platform, p.closure, roots[i])
		img, err := storeImages(ctx, dst, p, cfg, roots[i].fs, layers[i], opts)
		if err != nil {
			return nil, err
		}
		res.Images = append(res.Images, img.Image)
		stored = append(stored, img)
	}
	if err := tagImages(ctx, dst, res, stored, opts); err != nil {
		return nil, err
	}
	return res, nil
}

// planImages reads the closures, groups them into images, gives each
// its platform and plans its root layer, checking link roots and the
// entrypoint. It writes nothing.
func planImages(ctx context.Context, sources []Source, opts Options,
	group func([]closureRead) ([][]closureRead, error)) ([]*plan, narSources, []plannedRoot, error) {
	reads, err := readClosures(ctx, sources, opts.Jobs)
	if err != nil {
		return nil, nil, nil, err
	}
	groups, err := group(reads)
	if err != nil {
		return nil, nil, nil, err
	}
	plans, srcs := newPlans(groups)
	if err := checkLinkRoots(opts.LinkRoots, plans); err != nil {
		return nil, nil, nil, err
	}
	if plans, err = choosePlatforms(plans, opts.Platforms); err != nil {
		return nil, nil, nil, err
	}
	roots := make([]plannedRoot, len(plans))
	for i, p := range plans {
		if roots[i], err = planRoot(ctx, srcs, p, opts); err != nil {
			return nil, nil, nil, err
		}
	}
	return plans, srcs, roots, nil
}

// withDefaults checks opts for an image tagged tag and fills in defaults.
func (opts Options) withDefaults(tag string) (Options, error) {
	if tag != "" && !spec.ValidTag(tag) {
		return opts, fmt.Errorf("invalid image tag %q", tag)
	}
	if opts.NixSnapshotter && len(tag+snapshotterSuffix) > 128 {
		return opts, fmt.Errorf("tag %q is too long to add %s for the nix-snapshotter image", tag, snapshotterSuffix)
	}
	if opts.MaxLayers == 0 {
		opts.MaxLayers = spec.DefaultMaxLayers
	}
	if opts.MaxLayers < 2 {
		return opts, &OptionError{"MaxLayers", strconv.Itoa(opts.MaxLayers), "must be at least 2 (one store-path layer and the root layer)"}
	}
	if opts.Compression == "" {
		opts.Compression = spec.LayerGzip
	}
	if opts.Jobs <= 0 {
		opts.Jobs = backend.DefaultJobs()
	}
	return opts, nil
}

// plannedRoot is the root layer of one image, the link roots in its
// closure and the bin directories they give PATH.
type plannedRoot struct {
	fs        rootFS
	linkRoots []string
	pathEnv   []string
	cmd       []string // Options.Cmd, or the one DefaultCmd picked
	user      string   // the config's User
}

// checkLinkRoots fails unless each link root is in some image's closure
// (checked before platforms are selected: a link root of an image left
// out is no error).
func checkLinkRoots(linkRoots []string, plans []*plan) error {
	for _, lr := range linkRoots {
		in := slices.ContainsFunc(plans, func(p *plan) bool { return indexOfPath(p.paths, lr) >= 0 })
		if !in {
			var refs []string
			for _, p := range plans {
				refs = append(refs, p.refs())
			}
			return fmt.Errorf("link root %s: %w of %s", lr, ErrOutsideClosure, strings.Join(refs, ", "))
		}
	}
	return nil
}

// indexOfPath is the index of storePath in paths, or -1.
func indexOfPath(paths []artifact.PathArtifact, storePath string) int {
	return slices.IndexFunc(paths, func(p artifact.PathArtifact) bool { return p.Info.StorePath == storePath })
}

// planRoot assembles the root layer of p's image: /etc/passwd with the
// image's users, links into the link roots its closure holds (whose bin
// directories are returned for PATH), and checks that the entrypoint is
// in the image.
func planRoot(ctx context.Context, srcs narSources, p *plan, opts Options) (plannedRoot, error) {
	users, user, err := imageUsers(opts)
	if err != nil {
		return plannedRoot{}, err
	}
	root := plannedRoot{fs: newRootFS(users), user: user}
	for _, lr := range opts.LinkRoots {
		i := indexOfPath(p.paths, lr)
		if i < 0 {
			continue // in another platform's closure (checkLinkRoots)
		}
		top, err := topEntries(ctx, srcs.of(p.paths[i]), p.paths[i])
		if err != nil {
			return plannedRoot{}, err
		}
		root.fs.linkRoot(lr, top)
		root.linkRoots = append(root.linkRoots, lr)
		for _, h := range top {
			if h.Path == "/bin" || h.Path == "/sbin" {
				root.pathEnv = append(root.pathEnv, h.Path)
			}
		}
	}
	root.cmd = opts.Cmd
	if opts.DefaultCmd && len(opts.Entrypoint) == 0 && len(opts.Cmd) == 0 {
		root.cmd = defaultCmd(root.fs, root.linkRoots)
	}
	if len(opts.Entrypoint) > 0 {
		if err := checkInImage(opts.Entrypoint[0], p.paths, root.fs); err != nil {
			return plannedRoot{}, fmt.Errorf("entrypoint of the %s image of %s: %w", spec.PlatformString(p.platform), p.refs(), err)
		}
	}
	return root, nil
}

// ensureLayers reuses or converts the layer of each unit of paths of
// each image, opts.Jobs at once, and annotates their descriptors. A unit
// in several images (a path their closures share) is made once. It
// returns each image's layers and a Result counting them.
func ensureLayers(ctx context.Context, srcs narSources, dst backend.Target, units [][][]artifact.PathArtifact, opts Options) ([][]Layer, *Result, error) {
	byTag := map[string]*Layer{}
	var unique [][]artifact.PathArtifact
	for _, us := range units {
		for _, u := range us {
			if _, ok := byTag[layerTag(u, opts.Compression)]; !ok {
				byTag[layerTag(u, opts.Compression)] = &Layer{}
				unique = append(unique, u)
			}
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Jobs)
	for _, u := range unique {
		g.Go(func() error {
			l, err := ensureLayer(gctx, srcs, dst, u, opts)
			if err != nil {
				return err
			}
			l.Descriptor.Annotations = layerAnnotations(l)
			*byTag[layerTag(u, opts.Compression)] = l
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	res := &Result{}
	for _, l := range byTag {
		if l.Reused {
			res.Reused++
		} else {
			res.Converted++
		}
	}
	layers := make([][]Layer, len(units))
	for i, us := range units {
		for _, u := range us {
			layers[i] = append(layers[i], *byTag[layerTag(u, opts.Compression)])
		}
	}
	return layers, res, nil
}

// groupPaths splits paths into at most n layers: the largest n-1 paths
// alone, the rest together (in store-path order). With n or fewer paths
// each gets its own layer.
func groupPaths(paths []artifact.PathArtifact, n int) [][]artifact.PathArtifact {
	if len(paths) <= n {
		units := make([][]artifact.PathArtifact, len(paths))
		for i, p := range paths {
			units[i] = []artifact.PathArtifact{p}
		}
		return units
	}
	bySize := slices.Clone(paths)
	sort.SliceStable(bySize, func(i, j int) bool { return bySize[i].Info.NarSize > bySize[j].Info.NarSize })
	alone := map[string]bool{}
	for _, p := range bySize[:n-1] {
		alone[p.Info.StorePath] = true
	}
	var units [][]artifact.PathArtifact
	var rest []artifact.PathArtifact
	for _, p := range paths {
		if alone[p.Info.StorePath] {
			units = append(units, []artifact.PathArtifact{p})
		} else {
			rest = append(rest, p)
		}
	}
	return append(units, rest)
}

// ensureLayer reuses the stored layer of a unit, or copies it from the
// target its paths were read from, or converts and stores it; the
// caller annotates its descriptor.
func ensureLayer(ctx context.Context, srcs narSources, dst backend.Target, unit []artifact.PathArtifact, opts Options) (Layer, error) {
	if l, ok, err := findLayer(ctx, dst, unit, opts.Compression); err != nil {
		return Layer{}, err
	} else if ok {
		return l, nil
	}
	if l, ok, err := copyLayer(ctx, srcs, dst, unit, opts.Compression); err != nil || ok {
		return l, err
	}
	l, file, err := convertLayer(ctx, srcs, unit, opts.Compression, opts.TempDir)
	if err != nil {
		return Layer{}, err
	}
	defer os.Remove(file)
	slog.Debug("converted layer", "paths", len(unit), "first", unit[0].Info.StorePath, "digest", l.Descriptor.Digest)
	if err := pushFile(ctx, dst, l.Descriptor, file); err != nil {
		return Layer{}, err
	}
	return l, tagLayer(ctx, dst, l, opts.Compression)
}

// tagLayer stores and tags the layer artifact of l, whose blob dst holds.
func tagLayer(ctx context.Context, dst backend.Target, l Layer, c spec.LayerCompression) error {
	data, desc, err := layerArtifact(l)
	if err != nil {
		return err
	}
	if err := backend.PushBytes(ctx, dst, spec.EmptyConfig, spec.EmptyConfigData); err != nil {
		return err
	}
	return dst.PushReference(ctx, desc, bytes.NewReader(data), layerTag(l.Paths, c))
}

// copyLayer copies the layer of unit from the target its paths were read
// from, where an image made there left it, to dst: its blob mounted
// within one registry, else copied, then its layer artifact tagged. It
// reports false if that target has no such layer (or the paths come
// from several).
func copyLayer(ctx context.Context, srcs narSources, dst backend.Target, unit []artifact.PathArtifact, c spec.LayerCompression) (Layer, bool, error) {
	src := srcs.of(unit[0])
	for _, p := range unit[1:] {
		if srcs.of(p) != src {
			return Layer{}, false, nil
		}
	}
	if src == nil || src == dst {
		return Layer{}, false, nil
	}
	l, ok, err := findLayer(ctx, src, unit, c)
	if err != nil || !ok {
		return Layer{}, false, err
	}
	copyOpts := oras.DefaultCopyGraphOptions
	if repo, ok := backend.MountSource(src, dst); ok {
		copyOpts.MountFrom = func(context.Context, ocispec.Descriptor) ([]string, error) { return []string{repo}, nil }
	}
	if err := oras.CopyGraph(ctx, src, dst, l.Descriptor, copyOpts); err != nil {
		return Layer{}, false, fmt.Errorf("copying the layer of %s: %w", unit[0].Info.StorePath, err)
	}
	slog.Debug("copied layer", "paths", len(unit), "first", unit[0].Info.StorePath, "digest", l.Descriptor.Digest)
	return l, true, tagLayer(ctx, dst, l, c)
}

// pushFile stores the blob held in file.
func pushFile(ctx context.Context, dst backend.Target, desc ocispec.Descriptor, file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	return backend.PushBlob(ctx, dst, desc, f)
}

// storeRootLayer compresses and stores the root layer.
func storeRootLayer(ctx context.Context, dst backend.Target, root rootFS, c spec.LayerCompression) (Layer, error) {
	raw, err := root.tar()
	if err != nil {
		return Layer{}, err
	}
	l, err := storeSmallLayer(ctx, dst, raw, c, map[string]string{spec.AnnotationVersion: spec.Version, spec.AnnotationLayerRole: "root"})
	l.role = "root filesystem: " + root.summary()
	return l, err
}

// storeSmallLayer compresses the tar raw, held in memory, stores it as a
// layer blob and returns the layer, its descriptor carrying annotations.
func storeSmallLayer(ctx context.Context, dst backend.Target, raw []byte, c spec.LayerCompression, annotations map[string]string) (Layer, error) {
	var b bytes.Buffer
	cw, err := layerCompressor(&b, c)
	if err != nil {
		return Layer{}, err
	}
	if _, err := cw.Write(raw); err != nil {
		return Layer{}, err
	}
	if err := cw.Close(); err != nil {
		return Layer{}, err
	}
	desc := ocispec.Descriptor{MediaType: c.MediaType(), Digest: digest.FromBytes(b.Bytes()), Size: int64(b.Len())}
	if err := backend.PushBytes(ctx, dst, desc, b.Bytes()); err != nil {
		return Layer{}, err
	}
	desc.Annotations = annotations
	return Layer{Descriptor: desc, DiffID: digest.FromBytes(raw)}, nil
}
