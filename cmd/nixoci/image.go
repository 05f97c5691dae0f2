package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/image"
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

func runImage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("image", imageHelp, stdout)
	from := fs.String("from", "", "closure to make the image of: TARGET:CLOSURE_TAG")
	to := fs.String("to", "", "where to write the image: TARGET:IMAGE_TAG (required)")
	var entrypoint, cmd, env, linkRoots, labels stringList
	fs.Var(&entrypoint, "entrypoint", "entrypoint argument (repeatable) or a JSON array")
	fs.Var(&cmd, "cmd", "default command argument (repeatable) or a JSON array")
	fs.Var(&env, "env", "environment variable KEY=VALUE (repeatable); PATH defaults to the link roots' bin directories")
	fs.Var(&linkRoots, "link-root", "store path (or symlink to one) of the closure whose top-level directories are linked into / (repeatable)")
	fs.Var(&labels, "label", "image label KEY=VALUE (repeatable)")
	workdir := fs.String("workdir", "", "working directory")
	user := fs.String("user", "", "UID:GID to run as (added to /etc/passwd)")
	maxLayers := fs.Int("max-layers", spec.DefaultMaxLayers, "most layers; larger closures group their smallest paths")
	compression := fs.String("compression", "gzip", "layer compression: gzip (every client) or zstd")
	nixSnap := fs.Bool("nix-snapshotter", false, "also write the nix-snapshotter form of the image, tagged IMAGE_TAG-nix")
	buildpacks := fs.String("buildpacks-stack", "", "make a Cloud Native Buildpacks stack image with this stack ID")
	jobs := fs.Int("jobs", 0, "layers converted at once (default: CPUs)")
	platform := fs.String("platform", "", "OS/ARCH[/VARIANT] of the image (default: the closure's system if recorded, else this machine's)")
	plainHTTP := fs.Bool("plain-http", false, "use plain HTTP for registries even if they are not on loopback")
	chunkSize := chunkSizeFlag(fs)
	paths, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *to == "" {
		return fmt.Errorf("%w: --to TARGET:IMAGE_TAG is required", errUsage)
	}
	if (*from == "") == (len(paths) == 0) {
		return fmt.Errorf("%w: give either --from TARGET:CLOSURE_TAG or store PATHs", errUsage)
	}
	dstRef, err := backend.ParseRef(*to)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := dstRef.ValidateTag(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	comp, err := spec.ParseLayerCompression(*compression)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	opts := image.Options{
		WorkingDir: *workdir, User: *user, MaxLayers: *maxLayers, Compression: comp,
		NixSnapshotter: *nixSnap, BuildpacksStack: *buildpacks, Jobs: *jobs, Env: env,
		Labels: map[string]string{},
	}
	if opts.Entrypoint, err = argList(entrypoint); err != nil {
		return fmt.Errorf("%w: --entrypoint: %v", errUsage, err)
	}
	if opts.Cmd, err = argList(cmd); err != nil {
		return fmt.Errorf("%w: --cmd: %v", errUsage, err)
	}
	if *platform != "" {
		parts := strings.Split(*platform, "/")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
			return fmt.Errorf("%w: --platform %q: want OS/ARCH[/VARIANT], e.g. linux/arm64", errUsage, *platform)
		}
		opts.Platform = &ocispec.Platform{OS: parts[0], Architecture: parts[1]}
		if len(parts) == 3 {
			opts.Platform.Variant = parts[2]
		}
	}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return fmt.Errorf("%w: --label %q: want KEY=VALUE", errUsage, l)
		}
		opts.Labels[k] = v
	}
	local := &artifact.LocalStore{}
	for _, lr := range linkRoots {
		p := lr
		if resolved, err := local.ResolveRoot(lr); err == nil {
			p = resolved
		}
		opts.LinkRoots = append(opts.LinkRoots, p)
	}

	// --from is checked before the destination is opened (and created).
	var srcRef backend.Ref
	if *from != "" {
		if srcRef, err = backend.ParseRef(*from); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		if srcRef.Reference == "" {
			return fmt.Errorf("%w: --from %s names no closure: append :TAG", errUsage, srcRef)
		}
	}
	dst, err := openRef(ctx, dstRef.Base(), *plainHTTP, true, chunkSize.option())
	if err != nil {
		return err
	}
	src, closureTag := dst, ""
	if *from != "" {
		closureTag = srcRef.Reference
		if srcRef.Base() != dstRef.Base() {
			if src, err = openRef(ctx, srcRef.Base(), *plainHTTP, false); err != nil {
				return err
			}
		}
	} else {
		progress := &artifact.Progress{}
		stop := showProgress(stderr, "pushing", progress)
		res, err := artifact.Push(ctx, dst, local, paths, artifact.PushOptions{Jobs: *jobs, Progress: progress})
		stop()
		if err != nil {
			return chunkHint(err)
		}
		closureTag = res.Tag
		fmt.Fprintf(stderr, "pushed closure %s (%d store paths, %d packed)\n", dstRef.Base().WithReference(res.Tag), len(res.Paths), res.Packed)
	}
	res, err := image.Build(ctx, src, closureTag, dst, dstRef.Reference, opts)
	if err != nil {
		return chunkHint(err)
	}
	fmt.Fprintf(stderr, "image %s: %d layers (%d converted, %d reused, 1 root)\n", dstRef, len(res.Layers), res.Converted, res.Reused)
	fmt.Fprintf(stdout, "%s\n", dstRef)
	if res.Snapshotter != nil {
		fmt.Fprintf(stdout, "%s\n", dstRef.WithReference(res.SnapshotterTag))
	}
	fmt.Fprintf(stdout, "%s\n", res.Manifest.Digest)
	return nil
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
