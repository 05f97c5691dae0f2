#!/usr/bin/env bash
# What recording each path's System from its .drv (SPEC.md 4.1) costs a
# push from the local store: nixoci push of a closure of N+1 locally
# built paths (bench/many-derivations.nix, each .drv in the store) into a
# layout, first push and re-push (everything stored: reading the closure
# is all the work), this tree against REV built from git archive,
# interleaved by hyperfine in one run.
# Usage: bench/push-system.sh REV [N]   (e.g. REV=main; N default 500)
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: bench/push-system.sh REV [N]}; n=${2:-500}
export NIX_CONFIG="${NIX_CONFIG:-}"$'\nexperimental-features = nix-command\nbuild-users-group =\nsubstituters =\nsandbox = false'
work=$(mktemp -d /tmp/nixoci-bench-system.XXXXXX)
trap 'rm -rf "$work"' EXIT
git archive "$rev" | tar -x -C "$work/" --one-top-level=before
(cd "$work/before" && go build -o "$work/nixoci-before" ./cmd/nixoci)
go build -o "$work/nixoci-now" ./cmd/nixoci
root=$(nix-build bench/many-derivations.nix --arg n "$n" --no-out-link)
paths=$(nix-store --query --requisites "$root" | wc -l)

# What each records: the new one a System on every path, the old none.
"$work/nixoci-now" push --to "oci:$work/check-now:c" "$root" > /dev/null 2>&1
"$work/nixoci-now" inspect "oci:$work/check-now:c" | grep '^systems'
"$work/nixoci-before" push --to "oci:$work/check-before:c" "$root" > /dev/null 2>&1
"$work/nixoci-now" inspect "oci:$work/check-before:c" | grep '^systems'

for v in before now; do "$work/nixoci-$v" push --to "oci:$work/l-$v:c" "$root" > /dev/null 2>&1; done
hyperfine --style basic --warmup 2 --runs 15 --export-markdown "$work/first.md" \
  --prepare "rm -rf $work/f-before $work/f-now" \
  -n before "$work/nixoci-before push --to oci:$work/f-before:c $root" \
  -n now "$work/nixoci-now push --to oci:$work/f-now:c $root" > /dev/null
hyperfine --style basic --warmup 2 --runs 30 --export-markdown "$work/re.md" \
  -n before "$work/nixoci-before push --to oci:$work/l-before:c $root" \
  -n now "$work/nixoci-now push --to oci:$work/l-now:c $root" > /dev/null
echo
echo "Closure: $paths locally built store paths (bench/many-derivations.nix, n=$n). before = $rev, now = this tree."
echo
echo "First push into an empty layout:"
echo
cat "$work/first.md"
echo
echo "Re-push (all stored):"
echo
cat "$work/re.md"
