package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
)

const copyHelp = `
Usage: nixoci copy [flags] SRC:TAG DST[:TAG]

Copy a closure, an image made by 'nixoci image', or one store path
between any two targets (image layouts and registries), with everything
'nixoci serve' needs at the destination: each store path's manifest tagged
with its hash, the realisations, build logs, listings and debug-info
entries a closure lists tagged as serve finds them, and for an image the
layer artifacts later images reuse.
What the destination has already is skipped; between repositories of one
registry, blobs are mounted (the distribution API's cross-repository
mount) instead of uploaded, so no NAR bytes are sent. The tag is written
last: an interrupted copy leaves no tag naming incomplete content, and
running it again finishes it.

DST's tag defaults to SRC's. A TAG alone (or :TAG) names a closure in the
default store: 'nixoci copy hello ghcr.io/me/nix' publishes what 'nixoci
push' stored there. A closure copied with 'oras copy' or 'crane
copy' is served too (spec/SPEC.md 5.3); 'nixoci copy' adds the path tags
that make each lookup one request. Artifacts that are not nixoci's are
refused: copy those with oras copy or crane copy.

Examples:
  nixoci copy ghcr.io/me/staging:app ghcr.io/me/prod
  nixoci copy oci:/srv/nix-oci:hello 127.0.0.1:5000/cache:hello
  nixoci copy --json 127.0.0.1:5000/cache:hello oci:/tmp/offline
`

func runCopy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("copy", copyHelp, stdout)
	jobs := fs.Int("jobs", 16, "requests in flight at once")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	plainHTTP := fs.Bool("plain-http", false, "use plain HTTP for registries even if they are not on loopback")
	chunkSize := chunkSizeFlag(fs)
	refs, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(refs) != 2 {
		return fmt.Errorf("%w: want SRC:TAG and DST[:TAG]", errUsage)
	}
	srcRef, src, err := openTarget(ctx, refs[0], *plainHTTP, false)
	if err != nil {
		return storeHint(err, srcRef)
	}
	if srcRef.Reference == "" {
		return fmt.Errorf("%w: %s names nothing to copy: append :TAG", errUsage, refs[0])
	}
	dstRef, err := backend.ParseRef(refs[1])
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if dstRef.Reference == "" {
		dstRef.Reference = srcRef.Reference
	}
	if err := dstRef.ValidateTag(); err != nil {
		return fmt.Errorf("%w: %v (a copy by digest needs DST:TAG)", errUsage, err)
	}
	tag := dstRef.Reference
	dst, err := openRef(ctx, dstRef, *plainHTTP, true, chunkSize.option())
	if err != nil {
		return err
	}
	progress := &artifact.Progress{}
	stop := showProgress(stderr, "copying", progress)
	res, err := artifact.Copy(ctx, src, srcRef.Reference, dst, tag, artifact.CopyOptions{Jobs: *jobs, Progress: progress, Record: recordOptions(false)})
	stop()
	if err != nil {
		return chunkHint(storeHint(fmt.Errorf("copying %s to %s: %w", srcRef, dstRef.Base(), err), srcRef))
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Source      string `json:"source"`
			Destination string `json:"destination"`
			*artifact.CopyResult
		}{srcRef.String(), dstRef.Base().String() + ":" + tag, res})
	}
	if res.UpToDate {
		fmt.Fprintf(stderr, "%s:%s already names %s\n", dstRef.Base(), tag, res.Descriptor.Digest)
	} else {
		fmt.Fprintf(stderr, "copied %s of %d store paths: %d blobs and manifests copied (%s), %d mounted (%s), %d already there; %d tags written\n",
			res.Kind, res.Paths, res.Copied, human(res.CopiedBytes), res.Mounted, human(res.MountedBytes), res.Skipped, res.Tagged)
		if res.Files > 0 {
			fmt.Fprintf(stderr, "with %d realisations, build logs, listings or debug-info entries", res.Files)
			if res.FilesKept > 0 {
				fmt.Fprintf(stderr, " (%d of their tags name another artifact at the destination, which is kept)", res.FilesKept)
			}
			fmt.Fprintln(stderr)
		}
		if res.PathsElsewhere > 0 {
			fmt.Fprintf(stderr, "%d store paths of the image are not in %s (it was written apart from its closure): the image is copied without them; copy its closure too for serve to substitute them\n", res.PathsElsewhere, srcRef.Base())
		}
	}
	fmt.Fprintf(stdout, "%s\n", res.Descriptor.Digest)
	return nil
}
