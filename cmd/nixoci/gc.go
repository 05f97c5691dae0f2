package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/gc"
)

const gcHelp = `
Usage: nixoci gc [flags] TARGET

Delete from an image layout or registry repository what no root needs,
following closures as Nix's garbage collector follows references.

Roots are TARGET's closure tags and image tags. Retention (--keep-last,
--keep-within) applies to the closure tags --match selects (every closure
tag without --match): a tag stays a root if it is among the N newest, by
the push records 'nixoci push' and 'nixoci copy' write, or was pushed
within DURATION; a closure without a record (pushed by older nixoci or
copied by OCI tools) counts as the oldest. --keep-last 0 is refused (it
would keep none, and many tools read 0 as unlimited): --keep-none says
to drop every tag --match selects. Tags --match does not select,
image tags, and tags naming anything not nixoci's (plain images, other
tools' artifacts) always stay, and so does everything they reach.

What goes: store paths no remaining closure or image reaches, layer
artifacts no image uses, the closures retention dropped (or 'nixoci rm'
untagged) with their parts, push records but each kept closure's newest,
and referrers indexes left empty. Paths stored through 'nixoci serve
--upload' belong to no closure, so they go too: push a closure of what
you want to keep ('nixoci push --tag').

gc never waits for the grace period: it deletes what this run and an
earlier one at least --grace before (default 1h) both found unreachable,
and records what it finds newly unreachable (tag nixoci-gc-mark) for a
later run, saying when that becomes deletable. Run it from cron or CI,
say every hour. --wait does it in one go instead: it waits out the
grace period and collects again (up to --grace). Safe while others
push: deletions come in batches of at most 10 s, each after a fresh look
at the roots, announced by the tag nixoci-gc; a push that finds that
marker checks what it tagged and stores again what went. Give --grace at
least the time your longest push takes.

A registry deletes manifests (distribution: storage.delete.enabled: true;
a registry that refuses deletes fails before anything changes); the blob
space they held is freed only by the registry's own garbage collection,
run afterwards: docker-registry/distribution 'garbage-collect CONFIG' with
the registry stopped or read-only; zot on its own (storage.gc); Harbor's
Garbage Collection job. GHCR refuses manifest deletes: delete package
versions through GitHub's API instead. docs/gc.md tells more. In an image
layout gc deletes index entries and then every blob no entry reaches,
once older than --grace.

Durations are Go's (90m, 12h) or days: 30d, 1d12h.

Examples:
  nixoci gc --dry-run oci:/srv/nix
  nixoci gc 127.0.0.1:5000/cache    # hourly from cron: deletes what the run an hour ago found
  nixoci gc --match 'ci-*' --keep-last 20 --keep-within 30d ghcr.example/me/nix
  nixoci rm 127.0.0.1:5000/cache:old && nixoci gc --wait --grace 10m 127.0.0.1:5000/cache
  nixoci gc --json --dry-run 127.0.0.1:5000/cache | jq '.removed[].storePath'
  nixoci gc --json 127.0.0.1:5000/cache | jq '{removed: (.removed | length), pending: (.pending | length), nextDeletable}'
`

func runGC(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gc", gcHelp, stdout)
	dryRun := fs.Bool("dry-run", false, "print what would go and how many bytes; change nothing")
	keepLast := fs.Int("keep-last", 0, "keep the N newest closure tags --match selects (at least 1; 0 is refused, see --keep-none)")
	keepWithin := fs.String("keep-within", "", "keep closure tags --match selects that were pushed within DURATION (e.g. 30d)")
	keepNone := fs.Bool("keep-none", false, "keep none of the closure tags --match selects (every closure tag without --match): delete them all")
	var match stringList
	fs.Var(&match, "match", "closure tags retention applies to, a glob such as 'ci-*' (repeatable; default every closure tag)")
	grace := fs.String("grace", "1h", "how long something must have been unreachable, seen so by this run and an earlier one, before it is deleted; and the age a layout's blob must reach")
	wait := fs.Bool("wait", false, "wait until what this run found unreachable is --grace old, then collect again (one-shot use; takes up to --grace)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	jobs := fs.Int("jobs", 8, "requests in flight at once")
	force := fs.Bool("force", false, "run although the nixoci-gc marker says another gc runs (when it died)")
	plainHTTP := fs.Bool("plain-http", false, "use plain HTTP for the registry even if it is not on loopback")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return fmt.Errorf("%w: want one TARGET", errUsage)
	}
	if *wait && *dryRun {
		return fmt.Errorf("%w: --wait deletes: it goes without --dry-run", errUsage)
	}
	opts := gc.Options{DryRun: *dryRun, Jobs: *jobs, Force: *force, Wait: *wait, Progress: &gc.Progress{}}
	if opts.Grace, err = parseDuration(*grace); err != nil {
		return fmt.Errorf("%w: --grace: %v", errUsage, err)
	}
	if opts.Grace == 0 {
		opts.Grace = -1 // none
	}
	what := "every closure tag"
	if len(match) > 0 {
		what = "every closure tag --match selects"
	}
	if isSet(fs, "keep-last") && *keepLast == 0 {
		return fmt.Errorf("%w: --keep-last 0 would delete %s (0 does not mean unlimited): to delete them all, write --keep-none; to keep by age alone, leave out --keep-last", errUsage, what)
	}
	if isSet(fs, "keep-last") || isSet(fs, "keep-within") || *keepNone {
		r := &gc.Retention{Match: match, KeepLast: *keepLast, KeepNone: *keepNone}
		if *keepWithin != "" {
			if r.KeepWithin, err = parseDuration(*keepWithin); err != nil {
				return fmt.Errorf("%w: --keep-within: %v", errUsage, err)
			}
		}
		if *keepNone && (isSet(fs, "keep-last") || isSet(fs, "keep-within")) {
			return fmt.Errorf("%w: --keep-none keeps nothing: it goes without --keep-last and --keep-within", errUsage)
		}
		if err := r.Validate(); errors.Is(err, gc.ErrKeepsNothing) {
			return fmt.Errorf("%w: --keep-within %s would delete %s: to delete them all, write --keep-none", errUsage, *keepWithin, what)
		} else if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		opts.Retention = r
	} else if len(match) > 0 {
		return fmt.Errorf("%w: --match needs --keep-last, --keep-within or --keep-none (which of the tags it selects to keep)", errUsage)
	}
	ref, t, err := openTarget(ctx, rest[0], *plainHTTP, false)
	if err != nil {
		return err
	}
	if ref.Reference != "" {
		return fmt.Errorf("%w: %s: gc takes a repository or layout, not a tag (remove tags with nixoci rm)", errUsage, rest[0])
	}
	stop := showGCProgress(stderr, opts.Progress)
	res, err := gc.Collect(ctx, t, ref.String(), opts)
	stop()
	if res != nil {
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			if jerr := enc.Encode(res); jerr != nil {
				return jerr
			}
		} else {
			printGC(stdout, stderr, res, ref)
		}
	}
	return err
}

// printGC lists what went (would go) and what waits for the grace
// period on stdout, and sums it up on stderr.
func printGC(stdout, stderr io.Writer, res *gc.Result, ref backend.Ref) {
	verb := "removed"
	if res.DryRun {
		verb = "would remove"
	}
	for _, tt := range res.Dropped {
		fmt.Fprintf(stdout, "retention drops closure tag %s (pushed %s)\n", tt.Tag, pushedText(tt.Pushed))
	}
	kinds := map[string]int{}
	for _, it := range res.Removed {
		kinds[it.Kind]++
		fmt.Fprintf(stdout, "%s %s %s\n", verb, it.Kind, describeItem(it))
	}
	for _, it := range res.Pending {
		fmt.Fprintf(stdout, "pending %s %s: unreachable since %s, deletable from %s\n", it.Kind, describeItem(it),
			it.Since.UTC().Format(time.RFC3339), it.DeletableAt.UTC().Format(time.RFC3339))
	}
	var counts []string
	for _, k := range []string{gc.KindPath, gc.KindLayer, gc.KindClosure, gc.KindClosureTag, gc.KindPart, gc.KindCacheInfo, gc.KindRecord, gc.KindReferrers, gc.KindTombstone, gc.KindFile, gc.KindOther} {
		if n := kinds[k]; n > 0 {
			counts = append(counts, fmt.Sprintf("%d %s", n, k))
		}
	}
	if len(counts) == 0 {
		counts = []string{"nothing"}
	}
	fmt.Fprintf(stderr, "%s: kept %d closure, %d image and %d other tags; %s %s", ref, res.Closures, res.Images, res.Others, verb, strings.Join(counts, ", "))
	if ref.IsLayout() {
		fmt.Fprintf(stderr, "; %d blob files, %s", res.BlobFiles, human(res.Bytes))
	} else {
		fmt.Fprintf(stderr, "; %s of manifests and the blobs only they named (freed by the registry's own garbage collection, see nixoci gc --help)", human(res.Bytes))
	}
	if res.Spared > 0 {
		fmt.Fprintf(stderr, "; %d spared, in use again", res.Spared)
	}
	fmt.Fprintf(stderr, " (%v)\n", res.Took.Round(time.Millisecond))
	if n := len(res.Pending); n > 0 {
		fmt.Fprintf(stderr, "%d unreachable for less than --grace %v: deletable from %s (in %v); run nixoci gc again then\n",
			n, res.Grace, res.NextDeletable.UTC().Format(time.RFC3339), time.Until(res.NextDeletable).Round(time.Second))
	}
	if res.DeletesRefused != "" {
		fmt.Fprintf(stderr, "note: a real run would fail: %s\n", res.DeletesRefused)
	}
}

// describeItem names an item: its store path if any, digest and tags.
func describeItem(it gc.Item) string {
	what := it.Digest.String()
	if it.StorePath != "" {
		what = it.StorePath + " " + what
	}
	if len(it.Tags) > 0 {
		what += " (tag " + strings.Join(it.Tags, ", ") + ")"
	}
	return what
}

func pushedText(t time.Time) string {
	if t.IsZero() {
		return "at an unknown time"
	}
	return t.UTC().Format(time.RFC3339)
}

// showGCProgress redraws the collection's status line on a terminal until
// stop is called.
func showGCProgress(w io.Writer, p *gc.Progress) (stop func()) {
	return showStatus(w, func() string {
		line := "gc: " + p.Phase()
		switch p.Phase() {
		case "marking":
			line += fmt.Sprintf(": %d tags, %d/%d roots read", p.Tags.Load(), p.Read.Load(), p.Roots.Load())
		case "waiting":
			line += fmt.Sprintf(" out the grace period: %ds left, %d to remove", p.Waiting.Load(), p.Garbage.Load())
		case "deleting":
			line += fmt.Sprintf(": %d/%d removed", p.Removed.Load(), p.Garbage.Load())
		case "sweeping":
			line += fmt.Sprintf(": %d blob files deleted", p.Blobs.Load())
		}
		return line
	})
}

// parseDuration reads a Go duration, or days with a d suffix, optionally
// followed by a Go duration: "30d", "1d12h", "90m".
func parseDuration(s string) (time.Duration, error) {
	days, rest, ok := strings.Cut(s, "d")
	if !ok {
		return time.ParseDuration(s)
	}
	n, err := strconv.ParseFloat(days, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a duration (e.g. 30d, 12h, 90m)", s)
	}
	d := time.Duration(n * 24 * float64(time.Hour))
	if rest != "" {
		r, err := time.ParseDuration(rest)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration (e.g. 30d, 1d12h)", s)
		}
		d += r
	}
	return d, nil
}
