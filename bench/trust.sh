#!/usr/bin/env bash
# What serve's checks cost (issue 19: claims checked, signatures verified
# under the trust policy), side by side in one run: a cold `nix copy
# --from` through a fresh serve of REV (default main) and of this tree,
# interleaved, N rounds (default 3), from one docker-registry holding a
# closure of many small paths (bench/many-paths.nix: narinfo-bound, where
# per-path checks would show) signed with a CI key. Both serves sign with
# their own key; this tree's vouches for the CI key (--trusted-key), so
# it verifies each signature before signing, as production does. Nix
# checks serve's signatures. Prints a Markdown table with medians and the
# ratio. Warm narinfo throughput: bench/serve.sh --narinfo-only --before REV.
# Usage: bench/trust.sh [REV [N]]   (as root; Nix, docker-registry)
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:-main}; rounds=${2:-3}
export NIX_CONFIG="${NIX_CONFIG:-}"$'\nexperimental-features = nix-command\nbuild-users-group =\nsubstituters =\nsandbox = false'
work=$(mktemp -d /tmp/nixoci-bench-trust.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitfor() { for _ in $(seq 400); do curl -sf -o /dev/null "$1" && return; sleep 0.05; done; echo "not ready: $1" >&2; exit 1; }
now() { date +%s.%N; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

go build -o "$work/nixoci-now" ./cmd/nixoci
mkdir -p "$work/before-src"
git archive "$rev" | tar -x -C "$work/before-src"
(cd "$work/before-src" && go build -o "$work/nixoci-before" ./cmd/nixoci)
short=$(git rev-parse --short "$rev")
here="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo +)"

p=$(freeport)
mkdir -p "$work/reg"
printf 'version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:%s}\n' "$work/reg" "$p" > "$work/reg.yml"
docker-registry serve "$work/reg.yml" >"$work/reg.log" 2>&1 & pids+=($!)
waitfor "http://127.0.0.1:$p/v2/"
REG=127.0.0.1:$p/bench

root=$(nix-instantiate --eval --read-write-mode -E 'import ./bench/many-paths.nix {}' | tr -d '"')
npaths=$(nix-store --query --requisites "$root" | wc -l)
nix-store --generate-binary-cache-key bench-ci-1 "$work/ci.sec" "$work/ci.pub"
nix-store --generate-binary-cache-key bench-serve-1 "$work/serve.sec" "$work/serve.pub"
"$work/nixoci-now" push --to "$REG:many" --sign-key "$work/ci.sec" "$root" >/dev/null 2>&1

declare -A t
for round in $(seq "$rounds"); do
  for b in before now; do
    args=(serve --from "$REG" --sign-key "$work/serve.sec" --access-log=false)
    [ $b = now ] && args+=(--trusted-key "$work/ci.pub")
    port=$(freeport)
    "$work/nixoci-$b" "${args[@]}" --listen "127.0.0.1:$port" >"$work/serve-$b-$round.log" 2>&1 & spid=$!; pids+=($spid)
    waitfor "http://127.0.0.1:$port/nix-cache-info"
    store=$(mktemp -d "$work/store.XXXXXX")
    t0=$(now)
    nix copy --from "http://127.0.0.1:$port" --to "$store" --option trusted-public-keys "$(cat "$work/serve.pub")" "$root" 2>>"$work/copy.log"
    secs=$(python3 -c "print(f'{$(now) - $t0:.2f}')")
    kill $spid; wait $spid 2>/dev/null || true
    rm -rf "$store"
    t[$b]="${t[$b]:-} $secs"
    echo "round $round: $b ${secs}s" >&2
  done
done
# shellcheck disable=SC2086
tb=$(median ${t[before]}); tn=$(median ${t[now]})
echo "Cold \`nix copy --from\` through a fresh serve, $npaths paths (bench/many-paths.nix) from docker-registry on loopback, $rounds rounds interleaved; $(nproc) cores."
echo
echo "| serve | seconds by round | median | vs before |"
echo "|---|---|---|---|"
echo "| before ($short) |${t[before]} | $tb s | 1 |"
echo "| this tree ($here), --trusted-key |${t[now]} | $tn s | **$(python3 -c "print(f'{$tn / $tb:.3f}')")×** |"
