package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/image"
	"github.com/nixoci/nixoci/source"
	"github.com/nixoci/nixoci/spec"
)

const imageHelp = `
Usage: nixoci image [flags] --from TARGET:CLOSURE_TAG --to TARGET:IMAGE_TAG
       nixoci image [flags] --to TARGET:IMAGE_TAG PATH...

Make a runnable OCI image of a stored closure, with no base image: each
store path becomes its own layer (nix/store/<name>/…), disjoint from the
others, annotated with the store path and its NAR artifact. A small root
layer adds /etc/passwd, /etc/group, /tmp and symlinks into --link-root
paths (so /bin/hello works). Layers are streamed from the NAR blobs, so
no local Nix store is needed; a layer made once is reused by every later
image containing its store path. With PATHs instead of --from, their
closure is pushed to the --to target first.

Repeat --entrypoint and --cmd for each argument, or give a JSON array.

Examples:
  nixoci image --from oci:/srv/nix:hello --to oci:/srv/images:hello \
      --link-root /nix/store/…-hello --entrypoint /bin/hello
  nixoci image --to 127.0.0.1:5000/app:v1 --entrypoint /bin/app --link-root ./result ./result
  nixoci image --from ghcr.io/me/nix:shell --to ghcr.io/me/img:shell --nix-snapshotter
`

// imageFlags are the flags of nixoci image.
type imageFlags struct {
	from, to, workdir, user, compression, buildpacks, platform *string
	entrypoint, cmd, env, linkRoots, labels                    stringList
	maxLayers, jobs                                            *int
	nixSnap, plainHTTP                                         *bool
	chunkSize                                                  *byteSize
}

func newImageFlags(fs *flag.FlagSet) *imageFlags {
	f := &imageFlags{}
	f.from = fs.String("from", "", "closure to make the image of: TARGET:CLOSURE_TAG")
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
	f.buildpacks = fs.String("buildpacks-stack", "", "make a Cloud Native Buildpacks stack image with this stack ID")
	f.jobs = fs.Int("jobs", 0, "layers converted at once, and store paths pushed with PATHs (default "+backend.DefaultJobsText+")")
	f.platform = fs.String("platform", "", "OS/ARCH[/VARIANT] of the image (default: the closure's system if recorded, else this machine's)")
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
	if (*f.from == "") == (len(paths) == 0) {
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
	var srcRef backend.Ref
	if *f.from != "" {
		if srcRef, err = backend.ParseRef(*f.from); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		if srcRef.Reference == "" {
			return fmt.Errorf("%w: --from %s names no closure: append :TAG", errUsage, srcRef)
		}
	}
	dst, err := openRef(ctx, dstRef.Base(), *f.plainHTTP, true, f.chunkSize.option())
	if err != nil {
		return err
	}
	src, closureTag, err := f.closure(ctx, srcRef, dstRef, dst, paths, stderr)
	if err != nil {
		return chunkHint(err)
	}
	res, err := image.Build(ctx, src, closureTag, dst, dstRef.Reference, opts)
	if err != nil {
		return chunkHint(imageError(err))
	}
	fmt.Fprintf(stderr, "image %s: %d layers (%d converted, %d reused, 1 root)\n", dstRef, len(res.Layers), res.Converted, res.Reused)
	fmt.Fprintf(stdout, "%s\n", dstRef)
	if res.Snapshotter != nil {
		fmt.Fprintf(stdout, "%s\n", dstRef.WithReference(res.SnapshotterTag))
	}
	fmt.Fprintf(stdout, "%s\n", res.Manifest.Digest)
	return nil
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
	if opts.Entrypoint, err = argList(f.entrypoint); err != nil {
		return opts, fmt.Errorf("%w: --entrypoint: %v", errUsage, err)
	}
	if opts.Cmd, err = argList(f.cmd); err != nil {
		return opts, fmt.Errorf("%w: --cmd: %v", errUsage, err)
	}
	if *f.platform != "" {
		parts := strings.Split(*f.platform, "/")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
			return opts, fmt.Errorf("%w: --platform %q: want OS/ARCH[/VARIANT], e.g. linux/arm64", errUsage, *f.platform)
		}
		opts.Platform = &ocispec.Platform{OS: parts[0], Architecture: parts[1]}
		if len(parts) == 3 {
			opts.Platform.Variant = parts[2]
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

// closure is where the image's closure is read from and its tag: --from,
// or the closure of paths, pushed to dst first.
func (f *imageFlags) closure(ctx context.Context, srcRef, dstRef backend.Ref, dst backend.Target, paths []string, stderr io.Writer) (backend.Target, string, error) {
	if *f.from != "" {
		if srcRef.Base() == dstRef.Base() {
			return dst, srcRef.Reference, nil
		}
		src, err := openRef(ctx, srcRef.Base(), *f.plainHTTP, false)
		return src, srcRef.Reference, err
	}
	progress := &artifact.Progress{}
	stop := showProgress(stderr, "pushing", progress)
	res, err := artifact.Push(ctx, dst, &source.LocalStore{}, paths, artifact.PushOptions{Jobs: *f.jobs, Progress: progress})
	stop()
	if err != nil {
		return nil, "", err
	}
	fmt.Fprintf(stderr, "pushed closure %s (%d store paths, %d packed)\n", dstRef.Base().WithReference(res.Tag), len(res.Paths), res.Packed)
	return dst, res.Tag, nil
}

// imageFlagOf names the flag that sets each image.Options field an
// image.OptionError can name.
var imageFlagOf = map[string]string{"MaxLayers": "--max-layers", "User": "--user"}

// imageError says, for errors image.Build reports about its options,
// which flag to change.
func imageError(err error) error {
	var opt *image.OptionError
	if errors.As(err, &opt) && imageFlagOf[opt.Option] != "" {
		return fmt.Errorf("%s %s: %s", imageFlagOf[opt.Option], opt.Value, opt.Reason)
	}
	if errors.Is(err, image.ErrManifestTooLarge) {
		return fmt.Errorf("%w (lower --max-layers)", err)
	}
	return err
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
