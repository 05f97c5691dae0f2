package main

import (
	"context"
	"fmt"
	"io"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
)

const pullHelp = `
Usage: nixoci pull [flags] TARGET:TAG --to DIR
       nixoci pull [flags] TAG --to DIR

Write a stored closure into DIR as a Nix binary cache, which
'nix copy --from file://DIR' reads. Every blob is checked against its digest
as it streams; files are renamed into place only when complete, and
nix-cache-info is written last. Files already present are kept, so an
interrupted pull can simply be run again. A TAG alone (or :TAG) names a
closure in the default store.

Examples:
  nixoci pull oci:/srv/nix-oci:hello --to /tmp/cache
  nixoci pull ghcr.io/me/nix:dev --to ./cache && nix copy --from file://$PWD/cache ./result
`

func runPull(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("pull", pullHelp, stdout)
	to := fs.String("to", "", "directory to write the binary cache to (required)")
	jobs := fs.Int("jobs", artifact.DefaultNetworkJobs, "blobs fetched at once (a pull waits on the network: more in flight hide a registry's latency)")
	plainHTTP := fs.Bool("plain-http", false, "use plain HTTP for the registry even if it is not on loopback")
	refs, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(refs) != 1 || *to == "" {
		return fmt.Errorf("%w: want exactly one TARGET:TAG and --to DIR", errUsage)
	}
	ref, err := backend.ParseRef(refs[0])
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if ref.Reference == "" {
		return fmt.Errorf("%w: %s names no closure: append :TAG", errUsage, ref)
	}
	_, src, err := openTarget(ctx, refs[0], *plainHTTP, false)
	if err != nil {
		return storeHint(err, ref)
	}
	progress := &artifact.Progress{}
	stop := showProgress(stderr, "pulling", progress)
	res, err := artifact.Pull(ctx, src, ref.Reference, *to, artifact.PullOptions{Jobs: *jobs, Progress: progress})
	stop()
	if err != nil {
		return storeHint(err, ref)
	}
	fmt.Fprintf(stderr, "wrote %d files (%d already present) for %d store paths to %s\n", res.Written, res.Present, progress.PathsTotal.Load(), *to)
	fmt.Fprintf(stdout, "%s\n", res.Closure.Descriptor.Digest)
	return nil
}
