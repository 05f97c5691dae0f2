#!/usr/bin/env bash
# Catalog refresh at scale (issue 23): what serve's catalog of closures
# costs the registry per refresh, with a repository of CLOSURES synthetic
# closures (tags ci-1 … ci-N) of PATHS store paths each, none shared
# (bench/gcsynth; default 50 × 2,000: 100,000 path tags, as a pull-through
# cache of a few NixOS systems leaves), pushed to docker-registry.
#   serve     nixoci serve --from PROXY/cache --catalog-interval INTERVAL;
#             per refresh (cold: the first, which reads every closure;
#             warm: the next ones, nothing changed): registry requests,
#             bytes received, seconds, serve's RSS after it
#   listing   what a user would otherwise run to list the tags, side by
#             side: crane ls (pages of 1,000 where the registry pages)
#   gc        nixoci gc --dry-run --grace 0s --match 'ci-*' --keep-last N/2
# Every request goes through a counting proxy (bench/latencyproxy) with
# DELAY per request (default 5ms: a registry nearby). Prints a Markdown
# table and the steady-state load per serve replica per hour at the
# default --catalog-interval (1 minute).
#
# Pushing 100,000 paths takes about an hour on a busy 2-core machine;
# BULK=N adds N more path tags in the registry's storage instead (each a
# directory naming the path manifest of ci-1's root, as distribution
# keeps a tag): the tag list, and so the refresh, is the same as for
# pushed ones, and gc sees them as path tags naming another path's
# manifest. GC=0 leaves gc out.
#
# Usage: bench/catalog.sh [CLOSURES [PATHS]]   (as root; docker-registry installed)
#        BULK=99000 bench/catalog.sh 5 200     (100,000 path tags in minutes)
#        REGISTRY=registry bench/catalog.sh    (distribution v3)
#        DELAY=20ms INTERVAL=20s bench/catalog.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/root/go/bin
closures=${1:-50}
paths=${2:-2000}
delay=${DELAY:-5ms}
interval=${INTERVAL:-15s}
registry=${REGISTRY:-docker-registry}
go build -o bin/nixoci ./cmd/nixoci
go build -o bin/latencyproxy ./bench/latencyproxy
go build -o bin/gcsynth ./bench/gcsynth
NIXOCI=$PWD/bin/nixoci
# Tens of thousands of small files: in memory where there is some.
base=/tmp; [ -d /dev/shm ] && base=/dev/shm
work=$(mktemp -d "$base/nixoci-bench-catalog.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitfor() { for _ in $(seq 400); do curl -sf -o /dev/null "$1" && return; sleep 0.05; done; echo "not ready: $1" >&2; exit 1; }
export NIXOCI_STORE=$work/default-store DOCKER_CONFIG=$work/docker

port=$(freeport)
cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/storage}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port}
YML
"$registry" serve "$work/registry.yml" > "$work/registry.log" 2>&1 & pids+=($!)
waitfor "http://127.0.0.1:$port/v2/"
bin/latencyproxy -listen 127.0.0.1:0 -to "http://127.0.0.1:$port" -delay "$delay" > "$work/proxy.addr" 2> "$work/proxy.log" & pids+=($!)
for _ in $(seq 100); do [ -s "$work/proxy.addr" ] && break; sleep 0.05; done
proxy=$(head -1 "$work/proxy.addr")
stat() { curl -s "http://$proxy/-/latencyproxy/stats" | sed -n "s/^$1 //p"; }

echo "generating and pushing $closures closures of $paths paths" >&2
push_start=$(date +%s)
bin/gcsynth -dir "$work/cache" -closures "$closures" -paths "$paths" > "$work/roots"
repo=127.0.0.1:$port/cache
i=0
while read -r root; do
  i=$((i + 1))
  "$NIXOCI" push --jobs 16 --to "$repo:ci-$i" --from-cache "file://$work/cache" "$root" > /dev/null 2>> "$work/push.log"
done < "$work/roots"
rm -rf "$work/cache"
if [ "${BULK:-0}" -gt 0 ]; then
  python3 - "$work/storage/docker/registry/v2/repositories/cache/_manifests/tags" "$BULK" "$work/roots" <<'PY'
import hashlib, os, sys
tags, n = sys.argv[1], int(sys.argv[2])
alphabet = "0123456789abcdfghijklmnpqrsvwxyz"  # nix-base32
root = open(sys.argv[3]).readline().strip().split("/")[-1][:32]
link = open(os.path.join(tags, root, "current", "link")).read()
for i in range(n):
    h = hashlib.sha256(b"bulk %d" % i).digest()
    tag = "".join(alphabet[b % 32] for b in h[:32])
    os.makedirs(os.path.join(tags, tag, "current"), exist_ok=True)
    with open(os.path.join(tags, tag, "current", "link"), "w") as f:
        f.write(link)
PY
fi
tags=$(curl -s "http://127.0.0.1:$port/v2/cache/tags/list" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["tags"]))')
echo "pushed in $(( $(date +%s) - push_start )) s: $tags tags" >&2

# serve, and its refreshes: proxy counters and RSS at each one's end.
sport=$(freeport)
r0=$(stat requests); b0=$(stat download-bytes); s0=0; done_=0
"$NIXOCI" serve --listen "127.0.0.1:$sport" --from "$proxy/cache" --catalog-interval "$interval" --access-log=false > "$work/serve.log" 2>&1 & spid=$!; pids+=($spid)
metric() { curl -s "http://127.0.0.1:$sport/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
refreshes() { local n; n=$(metric 'nixoci_catalog_refreshes_total{outcome="complete"}'); echo "${n:-0}"; }
waitfor "http://127.0.0.1:$sport/nix-cache-info"
rows=()
while [ "$done_" -lt 3 ]; do
  n=$(refreshes)
  if [ "${n%.*}" -gt "$done_" ]; then
    k=$(( ${n%.*} - done_ )) # refreshes since the last look (1 unless the machine is slow)
    done_=${n%.*}
    r=$(stat requests); b=$(stat download-bytes)
    s=$(metric nixoci_catalog_refresh_seconds_sum)
    rss=$(awk '/VmRSS/ { print int($2 / 1024) }' "/proc/$spid/status")
    read_=$(metric nixoci_catalog_closures_read_total)
    kind=warm; [ "$done_" = 1 ] && kind=cold
    [ "$k" -gt 1 ] && kind="$kind, mean of $k"
    rows+=("| serve catalog refresh $done_ ($kind) | $(python3 -c "print(f'{($s - $s0) / $k:.2f}')") | $rss | $(( (r - r0) / k )) | $(python3 -c "print(f'{($b - $b0) / $k / 1e6:.2f}')") | ${read_%.*} closures read so far |")
    [ "$done_" -ge 2 ] && { warm_req=$(( (r - r0) / k )); warm_bytes=$(( (b - b0) / k )); warm_s=$(python3 -c "print(($s - $s0) / $k)"); }
    r0=$r; b0=$b; s0=$s
  fi
  kill -0 "$spid" || { cat "$work/serve.log" >&2; exit 1; }
  sleep 0.2
done
hwm=$(awk '/VmHWM/ { print int($2 / 1024) }' "/proc/$spid/status")
kill "$spid"

# What a user would otherwise run to list the tags.
r0=$(stat requests); b0=$(stat download-bytes)
/usr/bin/time -o "$work/crane.time" -f '%e %M' crane ls --insecure "$proxy/cache" > "$work/crane.out"
read -r crane_s crane_rss < "$work/crane.time"
rows+=("| crane ls ($(wc -l < "$work/crane.out") tags) | $crane_s | $((crane_rss / 1024)) | $(( $(stat requests) - r0 )) | $(python3 -c "print(f'{($(stat download-bytes) - $b0) / 1e6:.2f}')") | – |")

# gc's dry run over the same repository.
if [ "${GC:-1}" = 1 ]; then
r0=$(stat requests); b0=$(stat download-bytes)
/usr/bin/time -o "$work/gc.time" -f '%e %M' "$NIXOCI" gc --dry-run --json --grace 0s --match 'ci-*' --keep-last $((closures / 2)) "$proxy/cache" > "$work/gc.json" 2> "$work/gc.err" || { cat "$work/gc.err" >&2; exit 1; }
read -r gc_s gc_rss < "$work/gc.time"
would=$(python3 -c "import json; r=json.load(open('$work/gc.json')); print(len(r['removed']), 'manifests,', r['paths'], 'paths')")
rows+=("| nixoci gc --dry-run | $gc_s | $((gc_rss / 1024)) | $(( $(stat requests) - r0 )) | $(python3 -c "print(f'{($(stat download-bytes) - $b0) / 1e6:.2f}')") | would remove $would |")
fi

echo
echo "Repository on $registry: $tags tags ($closures closures of $paths paths, none shared); delay $delay per request; --catalog-interval $interval; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| run | seconds | RSS MiB | registry requests | MB received | notes |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "serve peak RSS: $hwm MiB. Warm refresh vs crane ls: $(python3 -c "print(f'{$warm_s / $crane_s:.2f}')")× the time."
echo "Steady state per serve replica per hour at the default --catalog-interval 1m (60 refreshes): $((warm_req * 60)) requests, $(python3 -c "print(f'{$warm_bytes * 60 / 1e6:.0f}')") MB received."
