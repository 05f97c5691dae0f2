package main

import (
	"context"
	"fmt"
	"io"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/source"
	"github.com/nixoci/nixoci/spec"
)

const pushHelp = `
Usage: nixoci push [flags] PATH...

Store the closures of store paths as OCI artifacts: one manifest per store
path (its NAR and narinfo, tagged with its hash part) and, for the whole
closure, an OCI image index listing those manifests and a nix-cache-info
(tagged with --tag), which 'oras pull' writes out as a Nix binary cache and
'oras copy' or 'crane copy' carry whole (spec/SPEC.md 5.1). Paths already
stored are not read again. From a local store, each path records the
system its deriver names, when the .drv is there (for images). The last
line printed on standard output is the digest of the closure index.

Without --to, closures go to the default store (see 'nixoci help'), where
a tag alone names them: 'nixoci push --tag hello ./result' then 'nixoci
inspect hello'.

PATH is a store path, a path inside one, or a symlink to one such as
./result. With --from-cache, PATHs are store paths in that binary cache and
their NARs are stored unchanged.

From the local store, the realisations of content-addressed derivations'
outputs in the closure (ca-derivations) are stored too, and with --logs
the build logs of the closure's derivers that Nix kept: each as an
artifact serve answers (realisations/…, build-trace-v2/…, log/…), listed
by the closure so that copies carry them and 'nixoci pull' or 'oras pull'
write them where 'nix copy --to file://' would (spec/SPEC.md 12.6). From
a file:// cache (--from-cache), what it holds of the closure is: NAR
listings, build logs, realisations and debug-info entries.

Examples:
  nixoci push ./result
  nixoci push --to oci:/srv/nix-oci --tag hello /nix/store/…-hello-2.12
  nixoci push --to ghcr.io/me/nix --tag dev --sign-key ~/.config/nix/sec.key ./result
  nixoci push --to 127.0.0.1:5000/cache --from-cache file:///tmp/cache /nix/store/…-app
`

func runPush(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("push", pushHelp, stdout)
	to := fs.String("to", "", "target to push to: oci:DIR or HOST[:PORT]/REPO, optionally with :TAG (default: the local store, see 'nixoci help')")
	tag := fs.String("tag", "", "tag of the closure (default: the name of the first PATH, e.g. hello-2.12)")
	compression := fs.String("compression", string(spec.DefaultCompression), "NAR compression: zstd, xz or none")
	jobs := fs.Int("jobs", 0, "NARs dumped and compressed at once (and narinfos of --from-cache fetched) (default "+backend.DefaultJobsText+"); never changes what is written")
	networkJobs := fs.Int("network-jobs", artifact.DefaultNetworkJobs, "paths checked or uploaded at once (an upload sends a path's two blobs together): existence checks and uploads, which overlap the compression; raise it for a registry far away")
	var signKeys stringList
	fs.Var(&signKeys, "sign-key", "sign narinfos with this Nix secret key file (repeatable)")
	fromCache := fs.String("from-cache", "", "import the paths from this binary cache (file:///DIR or http(s)://…) instead of the local store")
	plainHTTP := fs.Bool("plain-http", false, "use plain HTTP for the registry even if it is not on loopback")
	recordHost := fs.Bool("record-host", false, "record this host's name in the push record (spec/SPEC.md 10.1)")
	closureVersion := fs.String("closure-version", spec.ClosureVersion, "closure format: 2 (an index of the path manifests; copies with OCI tools keep working) or 1 (for nixoci before format 2, see spec/SPEC.md 5.4)")
	logs := fs.Bool("logs", false, "store the build logs of the closure's derivers that the local store keeps (in /nix/var/log/nix), up to 256 MiB each")
	chunkSize := chunkSizeFlag(fs)
	paths, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		return fmt.Errorf("%w: no store paths given", errUsage)
	}
	if *tag != "" && !spec.ValidTag(*tag) {
		return fmt.Errorf("%w: invalid tag %q: tags are 1-128 characters [a-zA-Z0-9_.-], not starting with . or -", errUsage, *tag)
	}
	comp, err := spec.ParseCompression(*compression)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *fromCache != "" && *logs {
		return fmt.Errorf("%w: --logs reads the local store's logs; it does not apply to --from-cache", errUsage)
	}
	if *fromCache != "" && isSet(fs, "compression") {
		return fmt.Errorf("%w: --compression does not apply to --from-cache (NARs are stored as the cache has them)", errUsage)
	}
	// Every check before opening the target: opening creates a layout.
	var ref backend.Ref
	if *to != "" {
		if ref, err = backend.ParseRef(*to); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	if ref.Reference != "" {
		if *tag != "" && *tag != ref.Reference {
			return fmt.Errorf("%w: --to names tag %q and --tag names %q", errUsage, ref.Reference, *tag)
		}
		if err := ref.ValidateTag(); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		*tag = ref.Reference
	}
	if *closureVersion != spec.ClosureVersion && *closureVersion != spec.Version {
		return fmt.Errorf("%w: --closure-version %q: want %s or %s", errUsage, *closureVersion, spec.ClosureVersion, spec.Version)
	}
	opts := artifact.PushOptions{Tag: *tag, Jobs: *jobs, NetworkJobs: *networkJobs, Progress: &artifact.Progress{}, ClosureVersion: *closureVersion,
		Record: recordOptions(*recordHost)}
	for _, f := range signKeys {
		k, err := narinfo.LoadSecretKey(f)
		if err != nil {
			return err
		}
		opts.SignKeys = append(opts.SignKeys, k)
	}
	var src artifact.Source
	if *fromCache != "" {
		bc, err := source.OpenBinaryCache(*fromCache, nil)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		bc.Jobs = *jobs
		src = bc
	} else {
		src = &source.LocalStore{Compression: comp, Logs: *logs}
	}
	ref, dst, err := openTarget(ctx, *to, *plainHTTP, true, chunkSize.option())
	if err != nil {
		return err
	}

	stop := showProgress(stderr, "pushing", opts.Progress)
	res, err := artifact.Push(ctx, dst, src, paths, opts)
	stop()
	if err != nil {
		return chunkHint(err)
	}
	parts := ""
	if n := res.Parts; n > 0 {
		parts = fmt.Sprintf(", split into %d parts", n)
	}
	fmt.Fprintf(stderr, "pushed %d store paths (%d packed, %d already stored)%s%s\n", len(res.Paths), res.Packed, res.Reused, parts, filesNote(res.Files))
	fmt.Fprintf(stdout, "%s\n%s\n", ref.Base().WithReference(res.Tag), res.Closure.Digest)
	return nil
}

// filesNote says what files a push stored with its closure, e.g. ", 2
// realisations, 1 build log"; "" if none.
func filesNote(files []artifact.ClosureFile) string {
	counts := map[string]int{}
	for _, f := range files {
		counts[f.Artifact.Type]++
	}
	var out string
	for _, k := range []struct{ t, one, many string }{
		{spec.ArtifactTypeRealisation, "realisation", "realisations"},
		{spec.ArtifactTypeLog, "build log", "build logs"},
		{spec.ArtifactTypeListing, "listing", "listings"},
		{spec.ArtifactTypeDebugInfo, "debug-info entry", "debug-info entries"},
	} {
		switch n := counts[k.t]; n {
		case 0:
		case 1:
			out += ", 1 " + k.one
		default:
			out += fmt.Sprintf(", %d %s", n, k.many)
		}
	}
	return out
}
