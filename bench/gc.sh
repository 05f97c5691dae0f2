#!/usr/bin/env bash
# Garbage-collection benchmark on docker-registry, side by side in one run.
# A synthetic repository of CLOSURES closures (tags ci-1 … ci-N) of PATHS
# store paths each, none shared (bench/gcsynth; default 100 × 100, so
# 10,000 path tags), is pushed to docker-registry (deletes enabled), then
#   dry       nixoci gc --dry-run --match 'ci-*' --keep-last N/2 --grace 0s
#   first     nixoci gc --match 'ci-*' --keep-last N/2 (grace 1 h: deletes
#             nothing, records what it found for a later run)
#   gc        nixoci gc --match 'ci-*' --keep-last N/2 --grace 0s
#             (drops the N/2 oldest closures and their paths)
#   again     the same gc once more (nothing left to delete)
#   registry  docker-registry garbage-collect (the registry stopped), which
#             frees the blobs of what nixoci gc deleted
# Every nixoci run goes through a counting proxy (bench/latencyproxy) with
# DELAY per request (default 0; DELAY=5ms for a registry nearby). Prints a
# Markdown table: wall time, peak RSS, requests, requests per deleted
# manifest, and the registry's blob store before and after.
#
# Usage: bench/gc.sh [CLOSURES [PATHS]]     (as root; docker-registry installed)
#        DELAY=5ms bench/gc.sh
#        REGISTRY=registry bench/gc.sh      (distribution v3, as .ci/run installs it)
set -euo pipefail
cd "$(dirname "$0")/.."
closures=${1:-100}
paths=${2:-100}
keep=$((closures / 2))
delay=${DELAY:-0}
registry=${REGISTRY:-docker-registry}
go build -o bin/nixoci ./cmd/nixoci
go build -o bin/latencyproxy ./bench/latencyproxy
go build -o bin/gcsynth ./bench/gcsynth
NIXOCI=$PWD/bin/nixoci
work=$(mktemp -d /tmp/nixoci-bench-gc.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitfor() { for _ in $(seq 400); do curl -sf -o /dev/null "$1" && return; sleep 0.05; done; echo "not ready: $1" >&2; exit 1; }
export NIXOCI_STORE=$work/default-store

port=$(freeport)
cat > "$work/registry.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/storage}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port}
EOF
startreg() { "$registry" serve "$work/registry.yml" > "$work/registry.log" 2>&1 & regpid=$!; pids+=($regpid); waitfor "http://127.0.0.1:$port/v2/"; }
startreg
bin/latencyproxy -listen 127.0.0.1:0 -to "http://127.0.0.1:$port" -delay "$delay" > "$work/proxy.addr" 2> "$work/proxy.log" & pids+=($!)
for _ in $(seq 100); do [ -s "$work/proxy.addr" ] && break; sleep 0.05; done
proxy=$(head -1 "$work/proxy.addr")
requests() { curl -s "http://$proxy/-/latencyproxy/stats" | sed -n 's/^requests //p'; }

echo "generating and pushing $closures closures of $paths paths" >&2
bin/gcsynth -dir "$work/cache" -closures "$closures" -paths "$paths" > "$work/roots"
repo=127.0.0.1:$port/cache
i=0
while read -r root; do
  i=$((i + 1))
  "$NIXOCI" push --jobs 16 --to "$repo:ci-$i" --from-cache "file://$work/cache" "$root" > /dev/null 2>> "$work/push.log"
done < "$work/roots"
tags=$(curl -s "http://127.0.0.1:$port/v2/cache/tags/list" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["tags"]))')
blobstore() { du -sb "$work/storage/docker/registry/v2/blobs" | cut -f1; }
before_bytes=$(blobstore)

# run NAME ARGS...: nixoci gc through the proxy; wall seconds, peak RSS
# (KiB), requests and the JSON result into $work/NAME.*
run() {
  local name=$1; shift
  local r0; r0=$(requests)
  /usr/bin/time -o "$work/$name.time" -f '%e %M' "$NIXOCI" gc --json "$@" "$proxy/cache" > "$work/$name.json" 2> "$work/$name.err" || {
    cat "$work/$name.err" >&2; exit 1; }
  echo $(( $(requests) - r0 )) > "$work/$name.requests"
}
retention=(--match 'ci-*' --keep-last "$keep")
run dry --dry-run --grace 0s "${retention[@]}"
run first "${retention[@]}"
run gc --grace 0s "${retention[@]}"
run again --grace 0s "${retention[@]}"

kill "$regpid"; wait "$regpid" 2>/dev/null || true
/usr/bin/time -o "$work/registry.time" -f '%e %M' "$registry" garbage-collect "$work/registry.yml" > "$work/registry-gc.log" 2>&1
after_bytes=$(blobstore)

field() { python3 -c "import json,sys; r=json.load(open('$1')); print($2)"; }
row() {
  local name=$1 what=$2
  read -r secs rss < "$work/$name.time"
  local req; req=$(cat "$work/$name.requests")
  local removed; removed=$(field "$work/$name.json" "len(r['removed'])")
  local pending; pending=$(field "$work/$name.json" "len(r['pending'])")
  local paths_removed; paths_removed=$(field "$work/$name.json" "r['paths']")
  local mb; mb=$(field "$work/$name.json" "round(r['bytes'] / 1e6, 1)")
  local per="–"
  [ "$name" = gc ] && per=$(python3 -c "print(f'{$req / $removed:.2f}')")
  echo "| $what | $secs | $((rss / 1024)) | $req | $removed ($paths_removed paths, $mb MB); $pending pending | $per |"
}
echo
echo "Repository on $registry: $tags tags ($closures closures of $paths paths, none shared); keep the newest $keep; delay $delay per request; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| run | wall s | peak RSS MiB | requests | removed (would remove) | requests per removed manifest |"
echo "|---|---|---|---|---|---|"
row dry "nixoci gc --dry-run --grace 0s"
row first "nixoci gc (first run, grace 1 h)"
row gc "nixoci gc --grace 0s"
row again "nixoci gc again"
read -r secs rss < "$work/registry.time"
echo "| $registry garbage-collect | $secs | $((rss / 1024)) | – | blob store $before_bytes → $after_bytes bytes | – |"
