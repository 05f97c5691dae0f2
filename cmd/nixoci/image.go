package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/image"
	"github.com/nixoci/nixoci/source"
	"github.com/nixoci/nixoci/spec"
)

const imageHelp = `
Usage: nixoci image [flags] --from TARGET:CLOSURE_TAG [--from …] --to TARGET:IMAGE_TAG
       nixoci image [flags] --to TARGET:IMAGE_TAG PATH...

Make a runnable OCI image of a stored closure, with no base image: each
store path becomes its own layer (nix/store/<name>/…), disjoint from the
others, annotated with the store path and its NAR artifact. A small root
layer adds /etc/passwd, /etc/group, /tmp and symlinks into --link-root
paths (so /bin/hello works). Layers are streamed from the NAR blobs, so
no local Nix store is needed; a layer made once is reused by every later
image containing its store path. With PATHs instead of --from, their
closure is pushed to the --to target first.

The image's platform comes from the system its paths record (pushed from
a local store that holds their .drv, or from a cache whose narinfos say
System): x86_64-linux is linux/amd64, aarch64-linux linux/arm64, and so
on; without one it is this machine's. --platform sets it instead (for a
cross-compiled closure, which records the system it was built on).

Repeat --from with closures of different systems for a multi-platform
image: one image per closure, under an OCI image index that docker,
podman and Kubernetes resolve to the node's platform. Each platform's
image is the one --from with that closure alone makes. The closures may
live in different registries, repositories or layouts (per-system
caches): each is read from its own, and every layer is written to the
--to target (a layer an earlier image left beside a closure is copied,
or mounted within one registry, rather than made again). A TAG alone
names a closure of the default store, where 'nixoci push' puts them. --link-root
paths are linked in the images whose closure holds them; --platform
then picks platforms (comma-separated) among the closures'.

Repeat --entrypoint and --cmd for each argument, or give a JSON array.

Examples:
  nixoci image --from oci:/srv/nix:hello --to oci:/srv/images:hello \
      --link-root /nix/store/…-hello --entrypoint /bin/hello
  nixoci image --to 127.0.0.1:5000/app:v1 --entrypoint /bin/app --link-root ./result ./result
  nixoci image --from ghcr.io/me/nix:shell --to ghcr.io/me/img:shell --nix-snapshotter
  nixoci image --from ghcr.io/me/nix-x86_64:hello --from ghcr.io/me/nix-aarch64:hello \
      --to ghcr.io/me/img:hello --link-root /nix/store/…-hello --link-root /nix/store/…-hello \
      --entrypoint /bin/hello
  nixoci push --tag hello ./result && nixoci image --from hello --to oci:/tmp/img:hello --link-root ./result
`

// imageFlags are the flags of nixoci image.
type imageFlags struct {
	to, workdir, user, compression, buildpacks, platform *string
	from, entrypoint, cmd, env, linkRoots, labels        stringList
	maxLayers, jobs                                      *int
	nixSnap, plainHTTP                                   *bool
	chunkSize                                            *byteSize
	buildpacksBuild                                      *bool
	created                                              *string
}

func newImageFlags(fs *flag.FlagSet) *imageFlags {
	f := &imageFlags{}
	fs.Var(&f.from, "from", "closure to make the image of: TARGET:CLOSURE_TAG, or a TAG of the default store; repeat with closures of other systems for a multi-platform image (each in any target)")
	f.to = fs.String("to", "", "where to write the image: TARGET:IMAGE_TAG (required)")
	fs.Var(&f.entrypoint, "entrypoint", "entrypoint argument (repeatable) or a JSON array")
	fs.Var(&f.cmd, "cmd", "default command argument (repeatable) or a JSON array")
	fs.Var(&f.env, "env", "environment variable KEY=VALUE (repeatable); PATH defaults to the link roots' bin directories")
	fs.Var(&f.linkRoots, "link-root", "store path (or symlink to one) of the closure whose top-level directories are linked into / (repeatable)")
	fs.Var(&f.labels, "label", "image label KEY=VALUE (repeatable)")
	f.workdir = fs.String("workdir", "", "working directory")
	f.user = fs.String("user", "", "UID:GID to run as (added to /etc/passwd)")
	f.maxLayers = fs.Int("max-layers", spec.DefaultMaxLayers, "most layers; larger closures group their smallest paths")
	f.compression = fs.String("compression", "gzip", "layer compression: gzip (every client) or zstd")
	f.nixSnap = fs.Bool("nix-snapshotter", false, "also write the nix-snapshotter form of the image, tagged IMAGE_TAG-nix")
	f.buildpacks = fs.String("buildpacks-stack", "", "make a Cloud Native Buildpacks run image with this ID (labels io.buildpacks.base.id and the older io.buildpacks.stack.id), user cnb 1000:1000 unless --user; base labels default as docs/buildpacks.md says, --label sets them")
	f.buildpacksBuild = fs.Bool("buildpacks-build", false, "with --buildpacks-stack, make a build image instead (user cnb 1001:1000 unless --user, never root)")
	f.created = fs.String("created", "", "creation time of the image (RFC 3339, or seconds since 1970), in its config, history and Buildpacks release date (default: $SOURCE_DATE_EPOCH if set, else none: digests never depend on the clock)")
	f.jobs = fs.Int("jobs", 0, "layers converted at once, and store paths pushed with PATHs (default "+backend.DefaultJobsText+")")
	f.platform = fs.String("platform", "", "OS/ARCH[/VARIANT] of the image (default: its paths' system if recorded, else this machine's); with several --from, the platforms to make, comma-separated (default all)")
	f.plainHTTP = fs.Bool("plain-http", false, "use plain HTTP for registries even if they are not on loopback")
	f.chunkSize = chunkSizeFlag(fs)
	return f
}

func runImage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("image", imageHelp, stdout)
	f := newImageFlags(fs)
	paths, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *f.to == "" {
		return fmt.Errorf("%w: --to TARGET:IMAGE_TAG is required", errUsage)
	}
	if (len(f.from) == 0) == (len(paths) == 0) {
		return fmt.Errorf("%w: give either --from TARGET:CLOSURE_TAG or store PATHs", errUsage)
	}
	dstRef, err := backend.ParseRef(*f.to)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := dstRef.ValidateTag(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	opts, err := f.options()
	if err != nil {
		return err
	}
	// --from is checked before the destination is opened (and created).
	fromRefs, err := f.sources()
	if err != nil {
		return err
	}
	dst, err := openRef(ctx, dstRef.Base(), *f.plainHTTP, true, f.chunkSize.option())
	if err != nil {
		return err
	}
	sources, err := f.closures(ctx, fromRefs, dstRef, dst, paths, stderr)
	if err != nil {
		return chunkHint(fromHint(err, fromRefs))
	}
	res, err := image.BuildPlatformsFrom(ctx, sources, dst, dstRef.Reference, opts)
	if err != nil {
		return chunkHint(fromHint(imageError(err, len(sources)), fromRefs))
	}
	from, oneTarget := fromTarget(fromRefs, dstRef)
	printImage(stderr, dstRef, from, oneTarget, res)
	fmt.Fprintf(stdout, "%s\n", dstRef)
	if res.Snapshotter != nil {
		fmt.Fprintf(stdout, "%s\n", dstRef.WithReference(res.SnapshotterTag))
	}
	fmt.Fprintf(stdout, "%s\n", res.Manifest.Digest)
	return nil
}

// sources parses the --from flags: each a closure, in a target of its
// own or one of the others'.
func (f *imageFlags) sources() ([]backend.Ref, error) {
	var refs []backend.Ref
	for _, from := range f.from {
		r, err := backend.ParseRef(from)
		if err != nil {
			return nil, fmt.Errorf("%w: --from %v", errUsage, err)
		}
		if r.Reference == "" {
			return nil, fmt.Errorf("%w: --from %s names no closure: append :TAG", errUsage, r)
		}
		refs = append(refs, r)
	}
	return refs, nil
}

// fromHint explains a closure --from named in the default store that is
// not there.
func fromHint(err error, refs []backend.Ref) error {
	for _, r := range refs {
		if store, serr := backend.DefaultStore(); serr == nil && r.Layout == store.Layout {
			return storeHint(err, r)
		}
	}
	return err
}

// fromTarget is the one target the image's closures came from, if one:
// messages then name them by tag.
func fromTarget(refs []backend.Ref, dstRef backend.Ref) (backend.Ref, bool) {
	if len(refs) == 0 {
		return dstRef.Base(), true
	}
	for _, r := range refs[1:] {
		if r.Base() != refs[0].Base() {
			return backend.Ref{}, false
		}
	}
	return refs[0].Base(), true
}

// printImage says what was made: the image, or each platform's, from
// the closures of one target or several.
func printImage(stderr io.Writer, dstRef backend.Ref, from backend.Ref, oneTarget bool, res *image.Result) {
	if len(res.Images) == 1 {
		img := res.Images[0]
		fmt.Fprintf(stderr, "image %s: %s, %d layers (%d converted, %d reused, 1 root)\n",
			dstRef, spec.PlatformString(img.Platform), len(img.Layers), res.Converted, res.Reused)
		return
	}
	fmt.Fprintf(stderr, "image index %s: %d platforms (%d layers converted, %d reused)\n", dstRef, len(res.Images), res.Converted, res.Reused)
	for _, img := range res.Images {
		closures := strings.Join(img.Closures, " + ")
		if oneTarget {
			closures = from.WithReference(strings.Join(img.Closures, "+")).String()
		}
		fmt.Fprintf(stderr, "  %-12s %s from %s, %d layers, %s\n", spec.PlatformString(img.Platform), img.System,
			closures, len(img.Layers), img.Manifest.Digest)
	}
}

// options turns the flags into image.Options.
func (f *imageFlags) options() (image.Options, error) {
	comp, err := spec.ParseLayerCompression(*f.compression)
	if err != nil {
		return image.Options{}, fmt.Errorf("%w: %v", errUsage, err)
	}
	opts := image.Options{
		WorkingDir: *f.workdir, User: *f.user, MaxLayers: *f.maxLayers, Compression: comp,
		NixSnapshotter: *f.nixSnap, BuildpacksStack: *f.buildpacks, Jobs: *f.jobs, Env: f.env,
		Labels: map[string]string{},
	}
	if *f.buildpacksBuild && *f.buildpacks == "" {
		return opts, fmt.Errorf("%w: --buildpacks-build needs --buildpacks-stack ID", errUsage)
	}
	opts.BuildpacksBuild = *f.buildpacksBuild
	if opts.Created, err = parseCreated(*f.created, os.Getenv("SOURCE_DATE_EPOCH")); err != nil {
		return opts, fmt.Errorf("%w: %v", errUsage, err)
	}
	if opts.Entrypoint, err = argList(f.entrypoint); err != nil {
		return opts, fmt.Errorf("%w: --entrypoint: %v", errUsage, err)
	}
	if opts.Cmd, err = argList(f.cmd); err != nil {
		return opts, fmt.Errorf("%w: --cmd: %v", errUsage, err)
	}
	if *f.platform != "" {
		for _, s := range strings.Split(*f.platform, ",") {
			p, err := spec.ParsePlatform(s)
			if err != nil {
				return opts, fmt.Errorf("%w: --platform: %v", errUsage, err)
			}
			opts.Platforms = append(opts.Platforms, p)
		}
	}
	for _, l := range f.labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return opts, fmt.Errorf("%w: --label %q: want KEY=VALUE", errUsage, l)
		}
		opts.Labels[k] = v
	}
	local := &source.LocalStore{}
	for _, lr := range f.linkRoots {
		p := lr
		if resolved, err := local.ResolveRoot(lr); err == nil {
			p = resolved
		}
		opts.LinkRoots = append(opts.LinkRoots, p)
	}
	return opts, nil
}

// closures are the closures of the image, each with the target it is
// read from: the --from closures (dst itself where a --from names its
// target), or the closure of paths, pushed to dst first.
func (f *imageFlags) closures(ctx context.Context, refs []backend.Ref, dstRef backend.Ref, dst backend.Target, paths []string, stderr io.Writer) ([]image.Source, error) {
	if len(refs) > 0 {
		opened := map[backend.Ref]backend.Target{dstRef.Base(): dst}
		_, oneTarget := fromTarget(refs, dstRef)
		var sources []image.Source
		for _, r := range refs {
			t, ok := opened[r.Base()]
			if !ok {
				var err error
				if t, err = openRef(ctx, r.Base(), *f.plainHTTP, false); err != nil {
					return nil, err
				}
				opened[r.Base()] = t
			}
			name := r.String() // closures of several targets are named in full
			if oneTarget {
				name = r.Reference
			}
			sources = append(sources, image.Source{Target: t, Ref: r.Reference, Name: name})
		}
		return sources, nil
	}
	progress := &artifact.Progress{}
	stop := showProgress(stderr, "pushing", progress)
	res, err := artifact.Push(ctx, dst, &source.LocalStore{}, paths, artifact.PushOptions{Jobs: *f.jobs, Progress: progress})
	stop()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stderr, "pushed closure %s (%d store paths, %d packed)\n", dstRef.Base().WithReference(res.Tag), len(res.Paths), res.Packed)
	return []image.Source{{Target: dst, Ref: res.Tag}}, nil
}

// imageFlagOf names the flag that sets each image.Options field an
// image.OptionError can name.
var imageFlagOf = map[string]string{"MaxLayers": "--max-layers", "User": "--user", "Platforms": "--platform"}

// imageError says, for errors image.Build reports about its options or
// the closures' systems, which flag to change; closures is how many
// --from there were.
func imageError(err error, closures int) error {
	var opt *image.OptionError
	switch {
	case errors.As(err, &opt) && imageFlagOf[opt.Option] != "":
		return fmt.Errorf("%s %s: %s", imageFlagOf[opt.Option], opt.Value, opt.Reason)
	case errors.Is(err, image.ErrManifestTooLarge):
		return fmt.Errorf("%w (lower --max-layers)", err)
	case closures == 1 && (errors.Is(err, image.ErrMixedSystems) || errors.Is(err, image.ErrNoPlatform)):
		return fmt.Errorf("%w (--platform OS/ARCH says which platform the image is for)", err)
	case errors.Is(err, image.ErrNoSystem):
		return fmt.Errorf("%w (paths record their system when pushed from a local store holding their .drv files, "+
			"or from a cache whose narinfos say System; an image of this closure alone takes --platform)", err)
	}
	return err
}

// parseCreated parses --created (RFC 3339, or seconds since 1970), or
// else SOURCE_DATE_EPOCH (seconds); neither is no time.
func parseCreated(flagValue, sourceDateEpoch string) (time.Time, error) {
	what, v := "--created", flagValue
	if v == "" {
		what, v = "SOURCE_DATE_EPOCH", sourceDateEpoch
	}
	if v == "" {
		return time.Time{}, nil
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.Unix(secs, 0).UTC(), nil
	}
	if what == "SOURCE_DATE_EPOCH" {
		return time.Time{}, fmt.Errorf("%s %q: want seconds since 1970", what, v)
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q: want RFC 3339 (2026-12-01T00:00:00Z) or seconds since 1970", what, v)
	}
	return t.UTC(), nil
}

// argList turns repeated flag values into an argument list; a single
// value that is a JSON array is decoded instead.
func argList(values []string) ([]string, error) {
	if len(values) == 1 && strings.HasPrefix(strings.TrimSpace(values[0]), "[") {
		var list []string
		err := json.Unmarshal([]byte(values[0]), &list)
		return list, err
	}
	return values, nil
}
