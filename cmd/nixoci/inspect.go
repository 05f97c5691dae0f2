package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

const inspectHelp = `
Usage: nixoci inspect [flags] TARGET:TAG
       nixoci inspect [flags] TAG

List the store paths of a stored closure (or, given the hash part of a
store path as TAG, of that path alone: paths pulled through serve
--upstream or uploaded to serve have a path tag but no closure) with their
sizes, compression,
signatures and the system each was built for (when recorded: from the
deriver's .drv when pushed from a local store, from the narinfo when
imported from a binary cache). The systems line counts paths per system;
an image of the closure takes its platform from them. The files the
closure lists follow: realisations of content-addressed outputs, build
logs, NAR listings and debug-info entries, each with its file names in a
binary cache and the store path it belongs to.

A TAG alone (or :TAG) names a closure in the default store, where
'nixoci push' puts closures unless --to says otherwise.

Examples:
  nixoci inspect hello
  nixoci inspect oci:/srv/nix-oci:hello
  nixoci inspect 127.0.0.1:5000/nix:cl0ai7xw811mpinmj9bg20gvr0k8ibg7
  nixoci inspect --json ghcr.io/me/nix:dev | jq '.paths[].storePath'
`

func runInspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("inspect", inspectHelp, stdout)
	asJSON := fs.Bool("json", false, "print JSON")
	jobs := fs.Int("jobs", 0, "narinfos fetched at once (default "+backend.DefaultJobsText+")")
	plainHTTP := fs.Bool("plain-http", false, "use plain HTTP for the registry even if it is not on loopback")
	refs, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(refs) != 1 {
		return fmt.Errorf("%w: want exactly one TARGET:TAG", errUsage)
	}
	ref, err := backend.ParseRef(refs[0])
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if ref.Reference == "" {
		return fmt.Errorf("%w: %s names no closure: append :TAG", errUsage, ref)
	}
	_, t, err := openTarget(ctx, refs[0], *plainHTTP, false)
	if err != nil {
		return storeHint(err, ref)
	}
	s, err := artifact.Inspect(ctx, t, ref.Reference, *jobs)
	if err != nil {
		return storeHint(err, ref)
	}
	s.Reference = ref.String()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	fmt.Fprintf(stdout, "closure  %s\ndigest   %s\nroots    %s\npaths    %d, NAR %s, stored %s", s.Reference, s.Digest, strings.Join(s.Roots, " "), len(s.Paths), human(int64(s.NarSize)), human(int64(s.FileSize)))
	if s.Parts > 1 {
		fmt.Fprintf(stdout, ", in %d manifest parts", s.Parts)
	}
	fmt.Fprintf(stdout, "\nsystems  %s\n\n", systemCounts(s.Paths))
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STORE PATH\tNAR\tSTORED\tCOMPRESSION\tSYSTEM\tSIGNATURES")
	for _, p := range s.Paths {
		var keys []string
		for _, sig := range p.Sigs {
			name, _, _ := strings.Cut(sig, ":")
			keys = append(keys, name)
		}
		sigs := strings.Join(keys, ",")
		if sigs == "" {
			sigs = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.StorePath, human(int64(p.NarSize)), human(int64(p.FileSize)), p.Compression, cmp.Or(p.System, "-"), sigs)
	}
	if err := tw.Flush(); err != nil || len(s.Files) == 0 {
		return err
	}
	fmt.Fprintln(stdout)
	tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FILE\tKIND\tSIZE\tSTORE PATH")
	for _, f := range s.Files {
		for _, n := range f.Files {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.Name, f.Kind, human(n.Size), f.StorePath)
		}
	}
	return tw.Flush()
}

// systemCounts says how many paths record each system, e.g.
// "x86_64-linux 12, none 1"; several systems other than builtin are
// flagged, since an image needs one.
func systemCounts(paths []artifact.PathSummary) string {
	counts := map[string]int{}
	for _, p := range paths {
		counts[cmp.Or(p.System, "none")]++
	}
	var parts []string
	platforms := 0
	for _, sys := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%s %d", sys, counts[sys]))
		if sys != "none" && sys != spec.SystemBuiltin {
			platforms++
		}
	}
	out := strings.Join(parts, ", ")
	if platforms > 1 {
		out += " (mixed: an image of it needs --platform)"
	}
	return out
}
