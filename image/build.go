package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

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
	// LinkRoots are store paths of the closure whose top-level
	// directories are linked into / (e.g. /bin/hello).
	LinkRoots []string
	// MaxLayers caps the layers; default spec.DefaultMaxLayers. Larger
	// closures keep their largest paths in layers of their own and group
	// the rest.
	MaxLayers   int
	Compression spec.LayerCompression
	// NixSnapshotter also writes the nix-snapshotter form, tagged
	// "<tag>-nix".
	NixSnapshotter bool
	// BuildpacksStack makes the image a Cloud Native Buildpacks stack with
	// this stack ID (label io.buildpacks.stack.id, user and group 1000).
	BuildpacksStack string
	Labels          map[string]string
	// Platform overrides the image's OS/architecture. By default it comes
	// from the roots' narinfo System (when a cache recorded one), else it
	// is the host's. (The local store's System is not recorded in
	// artifacts: it would make digests depend on which .drv files a
	// machine happens to have.)
	Platform *ocispec.Platform
	// Jobs is how many layers are converted (and store-path manifests
	// read) at once; default backend.DefaultJobs().
	Jobs    int
	TempDir string
}

// Result describes a built image.
type Result struct {
	Tag      string
	Manifest ocispec.Descriptor
	// ManifestData is the image manifest as stored.
	ManifestData []byte
	Config       ocispec.Descriptor
	Layers       []Layer // store-path layers, then the root layer
	Converted    int     // store-path layers converted now
	Reused       int     // store-path layers found stored
	// SnapshotterTag and Snapshotter describe the nix-snapshotter form.
	SnapshotterTag string
	Snapshotter    *ocispec.Descriptor
}

// ErrOutsideClosure: an entrypoint or link root is not in the closure.
var ErrOutsideClosure = errors.New("not in the closure")

// Build makes an image of the closure that closureRef names in src and
// tags it in dst. NAR blobs are read from src; layers are written to dst
// (and reused from it).
func Build(ctx context.Context, src backend.Target, closureRef string, dst backend.Target, tag string, opts Options) (*Result, error) {
	return BuildUnion(ctx, src, []string{closureRef}, dst, tag, opts)
}

// BuildUnion makes an image of the union of several closures (a path in
// more than one is one layer). Nothing is written until the closures,
// the link roots and the entrypoint have been checked; the tag is written
// last.
func BuildUnion(ctx context.Context, src backend.Target, closureRefs []string, dst backend.Target, tag string, opts Options) (*Result, error) {
	opts, err := opts.withDefaults(tag)
	if err != nil {
		return nil, err
	}
	closure, paths, err := readUnion(ctx, src, closureRefs, opts.Jobs)
	if err != nil {
		return nil, err
	}
	// The root layer first: it decides whether the entrypoint exists, and
	// a bad entrypoint must fail before anything is written.
	root, pathEnv, err := planRoot(ctx, src, strings.Join(closureRefs, "+"), paths, opts)
	if err != nil {
		return nil, err
	}
	layers, err := ensureLayers(ctx, src, dst, groupPaths(paths, opts.MaxLayers-1), opts)
	if err != nil {
		return nil, err
	}
	res := &Result{Tag: tag}
	for _, l := range layers {
		if l.Reused {
			res.Reused++
		} else {
			res.Converted++
		}
	}
	platform := platformOf(closure.Roots, paths)
	if opts.Platform != nil {
		platform = *opts.Platform
	}
	cfg := imageConfig(opts, platform, closure, pathEnv)
	if err := storeImages(ctx, dst, res, cfg, root, layers, paths, closure, opts); err != nil {
		return nil, err
	}
	return res, nil
}

// OptionError reports an Options field that Build cannot use.
type OptionError struct {
	Option string // the field, e.g. "User"
	Value  string // as messages show it: quoted if a string
	Reason string
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("image: %s %s: %s", e.Option, e.Value, e.Reason)
}

// ErrManifestTooLarge: the image manifest would be larger than
// registries must accept (spec.MaxManifestSize); fewer layers
// (Options.MaxLayers) make it smaller.
var ErrManifestTooLarge = errors.New("image manifest too large")

// withDefaults checks opts for an image tagged tag and fills in defaults.
func (opts Options) withDefaults(tag string) (Options, error) {
	if !spec.ValidTag(tag) {
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

// planRoot assembles the root layer: /etc/passwd with the image's users,
// links into the link roots (whose bin directories are returned for
// PATH), and checks that the entrypoint is in the image.
func planRoot(ctx context.Context, src backend.Target, closureRef string, paths []artifact.PathArtifact, opts Options) (rootFS, []string, error) {
	users, err := imageUsers(opts)
	if err != nil {
		return nil, nil, err
	}
	root := newRootFS(users)
	var pathEnv []string
	for _, lr := range opts.LinkRoots {
		i := slices.IndexFunc(paths, func(p artifact.PathArtifact) bool { return p.Info.StorePath == lr })
		if i < 0 {
			return nil, nil, fmt.Errorf("link root %s: %w of %s", lr, ErrOutsideClosure, closureRef)
		}
		top, err := topEntries(ctx, src, paths[i])
		if err != nil {
			return nil, nil, err
		}
		root.linkRoot(lr, top)
		for _, h := range top {
			if h.Path == "/bin" || h.Path == "/sbin" {
				pathEnv = append(pathEnv, h.Path)
			}
		}
	}
	if len(opts.Entrypoint) > 0 {
		if err := checkInImage(opts.Entrypoint[0], paths, root); err != nil {
			return nil, nil, fmt.Errorf("entrypoint: %w", err)
		}
	}
	return root, pathEnv, nil
}

// ensureLayers reuses or converts the layer of each unit of paths,
// opts.Jobs at once, and annotates their descriptors.
func ensureLayers(ctx context.Context, src, dst backend.Target, units [][]artifact.PathArtifact, opts Options) ([]Layer, error) {
	layers := make([]Layer, len(units))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Jobs)
	for i, u := range units {
		g.Go(func() error {
			l, err := ensureLayer(gctx, src, dst, u, opts)
			if err != nil {
				return err
			}
			l.Descriptor.Annotations = layerAnnotations(l)
			layers[i] = l
			return nil
		})
	}
	return layers, g.Wait()
}

// snapshotterSuffix is added to the tag of the nix-snapshotter form.
const snapshotterSuffix = "-nix"

// storeImages stores the root layer, then the image (config, manifest,
// tag) and, if asked, its nix-snapshotter form, recording them in res.
func storeImages(ctx context.Context, dst backend.Target, res *Result, cfg ocispec.Image, root rootFS, layers []Layer,
	paths []artifact.PathArtifact, closure *artifact.Closure, opts Options) error {
	rootLayer, err := storeRootLayer(ctx, dst, root, opts.Compression)
	if err != nil {
		return err
	}
	res.Layers = append(layers, rootLayer)
	res.Manifest, res.ManifestData, res.Config, err = storeImage(ctx, dst, res.Tag, cfg, res.Layers, closure)
	if err != nil || !opts.NixSnapshotter {
		return err
	}
	res.SnapshotterTag = res.Tag + snapshotterSuffix
	nixLayer, err := storeSnapshotterLayer(ctx, dst, layers, paths)
	if err != nil {
		return err
	}
	d, _, _, err := storeImage(ctx, dst, res.SnapshotterTag, cfg, []Layer{nixLayer, rootLayer}, closure)
	if err != nil {
		return err
	}
	res.Snapshotter = &d
	return nil
}

// readUnion reads closures and the artifacts of their paths: the roots
// of all, the digest of each, the descriptor of the first; a path in
// several closures once, in store-path order.
func readUnion(ctx context.Context, src backend.Target, refs []string, jobs int) (*artifact.Closure, []artifact.PathArtifact, error) {
	if len(refs) == 0 {
		return nil, nil, errors.New("no closure named")
	}
	var union *artifact.Closure
	var digests []string
	byPath := map[string]artifact.PathArtifact{}
	for _, ref := range refs {
		c, err := artifact.ReadClosure(ctx, src, ref)
		if err != nil {
			return nil, nil, fmt.Errorf("closure %s: %w", ref, err)
		}
		ps, err := artifact.ClosurePaths(ctx, src, c, max(jobs, artifact.DefaultNetworkJobs))
		if err != nil {
			return nil, nil, fmt.Errorf("closure %s: %w", ref, err)
		}
		for _, p := range ps {
			byPath[p.Info.StorePath] = p
		}
		digests = append(digests, c.Descriptor.Digest.String())
		if union == nil {
			union = c
			continue
		}
		union.Roots = append(union.Roots, c.Roots...)
	}
	slices.Sort(union.Roots)
	union.Roots = slices.Compact(union.Roots)
	union.Digests = digests
	paths := slices.Collect(maps.Values(byPath))
	sort.Slice(paths, func(i, j int) bool { return paths[i].Info.StorePath < paths[j].Info.StorePath })
	return union, paths, nil
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

// ensureLayer reuses the stored layer of a unit, or converts and stores
// it; the caller annotates its descriptor.
func ensureLayer(ctx context.Context, src, dst backend.Target, unit []artifact.PathArtifact, opts Options) (Layer, error) {
	if l, ok, err := findLayer(ctx, dst, unit, opts.Compression); err != nil {
		return Layer{}, err
	} else if ok {
		return l, nil
	}
	l, file, err := convertLayer(ctx, src, unit, opts.Compression, opts.TempDir)
	if err != nil {
		return Layer{}, err
	}
	defer os.Remove(file)
	slog.Debug("converted layer", "paths", len(unit), "first", unit[0].Info.StorePath, "digest", l.Descriptor.Digest)
	if err := pushFile(ctx, dst, l.Descriptor, file); err != nil {
		return Layer{}, err
	}
	data, desc, err := layerArtifact(l)
	if err != nil {
		return Layer{}, err
	}
	if err := backend.PushBytes(ctx, dst, spec.EmptyConfig, spec.EmptyConfigData); err != nil {
		return Layer{}, err
	}
	if err := dst.PushReference(ctx, desc, bytes.NewReader(data), layerTag(unit, opts.Compression)); err != nil {
		return Layer{}, err
	}
	return l, nil
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
	return storeSmallLayer(ctx, dst, raw, c, map[string]string{spec.AnnotationVersion: spec.Version, spec.AnnotationLayerRole: "root"})
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
