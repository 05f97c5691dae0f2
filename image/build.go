package image

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"log/slog"
	"maps"
	"os"
	"path"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/errdef"

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
	// Jobs is how many layers are converted at once; default CPUs.
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
// more than one is one layer).
func BuildUnion(ctx context.Context, src backend.Target, closureRefs []string, dst backend.Target, tag string, opts Options) (*Result, error) {
	if !spec.ValidTag(tag) {
		return nil, fmt.Errorf("invalid image tag %q", tag)
	}
	if opts.MaxLayers == 0 {
		opts.MaxLayers = spec.DefaultMaxLayers
	}
	if opts.MaxLayers < 2 {
		return nil, fmt.Errorf("--max-layers must be at least 2 (one store-path layer and the root layer)")
	}
	if opts.Compression == "" {
		opts.Compression = spec.LayerGzip
	}
	if opts.Jobs <= 0 {
		opts.Jobs = runtime.NumCPU()
	}
	closure, paths, err := readUnion(ctx, src, closureRefs, opts.Jobs)
	if err != nil {
		return nil, err
	}
	closureRef := strings.Join(closureRefs, "+")
	byPath := map[string]artifact.PathArtifact{}
	for _, p := range paths {
		byPath[p.Info.StorePath] = p
	}

	// The root layer first: it decides whether the entrypoint exists, and
	// a bad entrypoint must fail before anything is written.
	users, err := imageUsers(opts)
	if err != nil {
		return nil, err
	}
	root := newRootFS(users)
	var pathEnv []string
	for _, lr := range opts.LinkRoots {
		p, ok := byPath[lr]
		if !ok {
			return nil, fmt.Errorf("link root %s: %w of %s", lr, ErrOutsideClosure, closureRef)
		}
		top, err := topEntries(ctx, src, p)
		if err != nil {
			return nil, err
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
			return nil, fmt.Errorf("entrypoint: %w", err)
		}
	}

	units := groupPaths(paths, opts.MaxLayers-1)
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
	if err := g.Wait(); err != nil {
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

	rootLayer, err := storeRootLayer(ctx, dst, root, opts.Compression)
	if err != nil {
		return nil, err
	}
	platform := platformOf(closure.Roots, byPath)
	if opts.Platform != nil {
		platform = *opts.Platform
	}
	cfg := imageConfig(opts, platform, closure, pathEnv)
	res.Layers = append(layers, rootLayer)
	res.Manifest, res.ManifestData, res.Config, err = storeImage(ctx, dst, tag, cfg, res.Layers, closure)
	if err != nil {
		return nil, err
	}
	if opts.NixSnapshotter {
		res.SnapshotterTag = tag + "-nix"
		if len(res.SnapshotterTag) > 128 {
			return nil, fmt.Errorf("tag %q is too long to add -nix for the nix-snapshotter image", tag)
		}
		nixLayer, err := storeSnapshotterLayer(ctx, dst, layers, paths)
		if err != nil {
			return nil, err
		}
		d, _, _, err := storeImage(ctx, dst, res.SnapshotterTag, cfg, []Layer{nixLayer, rootLayer}, closure)
		if err != nil {
			return nil, err
		}
		res.Snapshotter = &d
	}
	return res, nil
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
		ps, err := artifact.ClosurePaths(ctx, src, c, max(jobs, 8))
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
	if err := pushBytes(ctx, dst, emptyConfig, []byte("{}")); err != nil {
		return Layer{}, err
	}
	if err := dst.PushReference(ctx, desc, bytes.NewReader(data), layerTag(unit, opts.Compression)); err != nil {
		return Layer{}, err
	}
	return l, nil
}

var emptyConfig = ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON, Digest: ocispec.DescriptorEmptyJSON.Digest, Size: 2}

func pushFile(ctx context.Context, dst backend.Target, desc ocispec.Descriptor, file string) error {
	if ok, err := dst.Exists(ctx, desc); err != nil || ok {
		return err
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	return ignoreExists(dst.Push(ctx, desc, f))
}

func pushBytes(ctx context.Context, dst backend.Target, desc ocispec.Descriptor, data []byte) error {
	if ok, err := dst.Exists(ctx, desc); err != nil || ok {
		return err
	}
	return ignoreExists(dst.Push(ctx, desc, bytes.NewReader(data)))
}

func ignoreExists(err error) error {
	if errors.Is(err, errdef.ErrAlreadyExists) {
		return nil
	}
	return err
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
	if err := pushBytes(ctx, dst, desc, b.Bytes()); err != nil {
		return Layer{}, err
	}
	desc.Annotations = annotations
	return Layer{Descriptor: desc, DiffID: digest.FromBytes(raw)}, nil
}

// imageUsers are the users /etc/passwd lists besides root.
func imageUsers(opts Options) ([]User, error) {
	var users []User
	if opts.BuildpacksStack != "" {
		users = append(users, User{Name: "cnb", UID: 1000, GID: 1000, Home: "/home/cnb"})
	}
	if opts.User != "" {
		uid, gid, ok := strings.Cut(opts.User, ":")
		u, err1 := strconv.Atoi(uid)
		g, err2 := strconv.Atoi(gid)
		if !ok || err1 != nil || err2 != nil || u < 0 || g < 0 {
			return nil, fmt.Errorf("--user %q: want UID:GID, both numbers", opts.User)
		}
		if u != 0 && !(opts.BuildpacksStack != "" && u == 1000) {
			users = append(users, User{Name: "user", UID: u, GID: g, Home: "/tmp"})
		}
	}
	return users, nil
}

// checkInImage fails unless p is in a store path of the closure or made
// by the root layer.
func checkInImage(p string, paths []artifact.PathArtifact, root rootFS) error {
	if !path.IsAbs(p) {
		return nil // resolved through PATH at run time
	}
	clean := path.Clean(p)
	for _, a := range paths {
		if clean == a.Info.StorePath || strings.HasPrefix(clean, a.Info.StorePath+"/") {
			return nil
		}
	}
	if root.has(clean) {
		return nil
	}
	return fmt.Errorf("%s: %w", p, ErrOutsideClosure)
}

// platformOf maps the Nix system of the closure's roots to an OCI
// platform; unknown systems fall back to the host's.
func platformOf(roots []string, byPath map[string]artifact.PathArtifact) ocispec.Platform {
	systems := map[string]ocispec.Platform{
		"x86_64-linux":      {OS: "linux", Architecture: "amd64"},
		"aarch64-linux":     {OS: "linux", Architecture: "arm64"},
		"i686-linux":        {OS: "linux", Architecture: "386"},
		"armv7l-linux":      {OS: "linux", Architecture: "arm", Variant: "v7"},
		"armv6l-linux":      {OS: "linux", Architecture: "arm", Variant: "v6"},
		"riscv64-linux":     {OS: "linux", Architecture: "riscv64"},
		"powerpc64le-linux": {OS: "linux", Architecture: "ppc64le"},
		"s390x-linux":       {OS: "linux", Architecture: "s390x"},
	}
	for _, r := range roots {
		if p, ok := byPath[r]; ok {
			if pl, ok := systems[p.Info.System]; ok {
				return pl
			}
		}
	}
	return ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
}

// imageConfig is the runtime configuration; it has no creation time.
func imageConfig(opts Options, pl ocispec.Platform, c *artifact.Closure, pathEnv []string) ocispec.Image {
	env := slices.Clone(opts.Env)
	hasPath := slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, "PATH=") })
	if !hasPath {
		dirs := slices.Compact(append(slices.Sorted(slices.Values(pathEnv)), "/usr/bin"))
		for _, lr := range opts.LinkRoots {
			dirs = append(dirs, lr+"/bin")
		}
		env = append([]string{"PATH=" + strings.Join(dirs, ":")}, env...)
	}
	labels := map[string]string{spec.AnnotationClosure: strings.Join(c.Roots, " ")}
	for k, v := range opts.Labels {
		labels[k] = v
	}
	user := opts.User
	if opts.BuildpacksStack != "" {
		labels["io.buildpacks.stack.id"] = opts.BuildpacksStack
		env = append(env, "CNB_USER_ID=1000", "CNB_GROUP_ID=1000")
		if user == "" {
			user = "1000:1000"
		}
	}
	return ocispec.Image{
		Platform: pl,
		Config: ocispec.ImageConfig{
			User: user, Env: env, Entrypoint: opts.Entrypoint, Cmd: opts.Cmd,
			WorkingDir: opts.WorkingDir, Labels: labels,
		},
		RootFS: ocispec.RootFS{Type: "layers"},
	}
}

// storeImage writes the config and the manifest, and tags it last.
func storeImage(ctx context.Context, dst backend.Target, tag string, cfg ocispec.Image, layers []Layer, c *artifact.Closure) (desc ocispec.Descriptor, data []byte, cfgDesc ocispec.Descriptor, err error) {
	cfg.RootFS.DiffIDs = nil
	var descs []ocispec.Descriptor
	for _, l := range layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.DiffID)
		descs = append(descs, l.Descriptor)
	}
	cfgData, err := json.Marshal(cfg)
	if err != nil {
		return desc, nil, cfgDesc, err
	}
	cfgDesc = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfgData), Size: int64(len(cfgData))}
	if err := pushBytes(ctx, dst, cfgDesc, cfgData); err != nil {
		return desc, nil, cfgDesc, err
	}
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    cfgDesc,
		Layers:    descs,
		Annotations: map[string]string{
			spec.AnnotationVersion: spec.Version,
			spec.AnnotationClosure: strings.Join(c.Digests, " "),
		},
	}
	data, err = json.Marshal(m)
	if err != nil {
		return desc, nil, cfgDesc, err
	}
	if len(data) > spec.MaxManifestSize {
		return desc, nil, cfgDesc, fmt.Errorf("image manifest would be %d bytes, over %d: lower --max-layers", len(data), spec.MaxManifestSize)
	}
	desc = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := dst.PushReference(ctx, desc, bytes.NewReader(data), tag); err != nil {
		return desc, nil, cfgDesc, err
	}
	return desc, data, cfgDesc, nil
}
