#!/usr/bin/env bash
# What recording each path's System from its .drv (SPEC.md 4.1) costs a
# push from the local store: nixoci push of a closure of N+1 locally
# built paths (bench/many-derivations.nix, each .drv in the store) into a
# layout, first push and re-push (everything stored: reading the closure
# is all the work), this tree against REV built from git archive,
# interleaved in one run.
# Usage: bench/push-system.sh REV [N [ROUNDS]]   (e.g. REV=main; N default 500, ROUNDS 15)
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: bench/push-system.sh REV [N [ROUNDS]]}; n=${2:-500}; rounds=${3:-15}
export NIX_CONFIG="${NIX_CONFIG:-}"$'\nexperimental-features = nix-command\nbuild-users-group =\nsubstituters =\nsandbox = false'
work=$(mktemp -d /tmp/nixoci-bench-system.XXXXXX)
trap 'cp "$work/results" /tmp/push-system-results.txt 2>/dev/null; rm -rf "$work"' EXIT
git archive "$rev" | tar -x -C "$work/" --one-top-level=before
(cd "$work/before" && go build -o "$work/nixoci-before" ./cmd/nixoci)
go build -o "$work/nixoci-now" ./cmd/nixoci
root=$(nix-build bench/many-derivations.nix --arg n "$n" --no-out-link 2> "$work/build.log")
paths=$(nix-store --query --requisites "$root" | wc -l)

# What each records: the new one a System on every path, the old none.
"$work/nixoci-now" push --to "oci:$work/check-now:c" "$root" > /dev/null 2>&1
"$work/nixoci-now" inspect "oci:$work/check-now:c" | grep '^systems'
"$work/nixoci-before" push --to "oci:$work/check-before:c" "$root" > /dev/null 2>&1
"$work/nixoci-now" inspect "oci:$work/check-before:c" | grep '^systems'

# Interleaved rounds (before, now; now, before; …); medians of CPU time.
for v in before now; do "$work/nixoci-$v" push --to "oci:$work/l-$v:c" "$root" > /dev/null 2>&1; done
# cpu: CPU milliseconds (user + system, nixoci and the nix-store it runs)
# of a command that must succeed; load elsewhere on the machine disturbs
# it far less than wall time.
cpu() {
  /usr/bin/time -o "$work/time" -f '%U %S' "$@" > /dev/null 2> "$work/err" || { cat "$work/err" >&2; return 1; }
  awk '{printf "%d\n", ($1 + $2) * 1000}' "$work/time"; }
for i in $(seq "$rounds"); do
  order="before now"; [ $((i % 2)) = 0 ] && order="now before" # neither always goes first
  for v in $order; do
    rm -rf "$work/f-$v"
    t=$(cpu "$work/nixoci-$v" push --to "oci:$work/f-$v:c" "$root"); echo "$v first $t" >> "$work/results"
    t=$(cpu "$work/nixoci-$v" push --to "oci:$work/l-$v:c" "$root"); echo "$v re $t" >> "$work/results"
  done
done
median() { sort -n | awk '{a[NR]=$1} END {n=NR; print (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2}'; }
med() { awk -v v="$1" -v k="$2" '$1 == v && $2 == k {print $3}' "$work/results" | median; }
echo
echo "Closure: $paths locally built store paths (bench/many-derivations.nix, n=$n); before = $rev, now = this tree; $rounds rounds interleaved, median CPU ms (user + system, with the nix-store processes)."
echo
echo "| push | before, CPU ms | now, CPU ms | now / before |"
echo "|---|---|---|---|"
for k in first re; do
  b=$(med before $k); w=$(med now $k)
  echo "| $( [ $k = first ] && echo 'first, into an empty layout' || echo 're-push, all stored') | $b | $w | $(echo "scale=2; $w / $b" | bc) |"
done
