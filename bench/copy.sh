#!/usr/bin/env bash
# Copy benchmark, side by side in one run: nixoci copy versus oras copy of
# the same closure tag (bench/go-closure.nix, ~190 MB of NAR, pushed with
# nixoci), between two repositories of one docker-registry and between
# two docker-registry instances. A counting proxy (bench/latencyproxy,
# no delay) in front of each registry counts the request bytes uploaded.
# Runs interleaved, median of N (default 3). Prints a Markdown table.
# Usage: bench/copy.sh [N]   (as root; Nix, docker-registry, oras)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
export NIX_CONFIG="${NIX_CONFIG:-}"$'\nexperimental-features = nix-command\nbuild-users-group =\nsubstituters =\nsandbox = false'
export PATH=$PATH:$(go env GOPATH)/bin
go build -o bin/nixoci ./cmd/nixoci
go build -o bin/latencyproxy ./bench/latencyproxy
NIXOCI=$PWD/bin/nixoci
work=$(mktemp -d /tmp/nixoci-bench-copy.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitfor() { for _ in $(seq 400); do curl -sf -o /dev/null "$1" && return; sleep 0.05; done; echo "not ready: $1" >&2; exit 1; }
now() { date +%s.%N; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

registry() { # registry NAME: start docker-registry and a counting proxy; sets port and proxy
  local p; p=$(freeport)
  mkdir -p "$work/$1"
  printf 'version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:%s}\n' "$work/$1" "$p" > "$work/$1.yml"
  docker-registry serve "$work/$1.yml" >"$work/$1.log" 2>&1 & pids+=($!)
  waitfor "http://127.0.0.1:$p/v2/"
  ./bin/latencyproxy -to "http://127.0.0.1:$p" >"$work/$1.addr" 2>"$work/$1.proxy" & pids+=($!)
  for _ in $(seq 200); do [ -s "$work/$1.addr" ] && break; sleep 0.02; done
  proxy=$(cat "$work/$1.addr")
}
registry r1; A=$proxy
registry r2; B=$proxy

root=$(nix-build bench/go-closure.nix --no-out-link)
"$NIXOCI" push --to "$A/src:c" "$root" >/dev/null 2>&1

# Request bytes both proxies forwarded so far (uploads; a mount sends none).
regsize() { for a in "$A" "$B"; do curl -s "http://$a/-/latencyproxy/stats"; done | awk '/upload-bytes/ {s+=$2} END {print s}'; }
declare -A t b
n=0
for round in $(seq "$rounds"); do
  for tool in nixoci oras; do
    for where in same other; do
      n=$((n+1))
      dst=$A/dst-$tool-$n; [ $where = other ] && dst=$B/dst-$tool-$n
      before=$(regsize); t0=$(now)
      if [ $tool = nixoci ]; then
        "$NIXOCI" copy "$A/src:c" "$dst" >/dev/null 2>>"$work/copy.log"
      else
        oras copy --from-plain-http --to-plain-http "$A/src:c" "$dst:c" >/dev/null 2>>"$work/copy.log"
      fi
      secs=$(python3 -c "print(f'{$(now) - $t0:.2f}')")
      grown=$(( $(regsize) - before ))
      t[$tool-$where]="${t[$tool-$where]:-} $secs"
      b[$tool-$where]=$grown
      echo "round $round: $tool to $where registry: ${secs}s, uploaded $grown bytes" >&2
    done
  done
done
echo "| copy of the Go closure tag | nixoci copy | oras copy | ratio | bytes uploaded: nixoci copy | oras copy |"
echo "|---|---|---|---|---|---|"
for where in same other; do
  # shellcheck disable=SC2086
  tn=$(median ${t[nixoci-$where]}); to=$(median ${t[oras-$where]})
  label="between two repositories of one registry"; [ $where = other ] && label="between two registries"
  echo "| $label | $tn s | $to s | **$(python3 -c "print(f'{$tn / $to:.2f}')")×** | ${b[nixoci-$where]} B | ${b[oras-$where]} B |"
done
