#!/usr/bin/env bash
# Pull-through benchmark, side by side in one run (issue 23). An upstream
# binary cache (nginx serving what `nix copy --to file://` wrote, signed,
# xz as Nix writes it) and docker-registry are each 20 ms away behind a
# latency proxy (bench/latencyproxy); Nix 2.8 copies the 301-path DAG of
# bench/remote-closures.nix into an empty store under /dev/shm:
#   direct    nix copy --from the upstream itself (what a user would run
#             otherwise: cache.nixos.org in substituters)
#   pull      nix copy --from serve --upstream, cold: serve pulls every
#             path through and stores it in an empty repository
#   pulled    the same copy from that repository through a fresh serve
#             without --upstream (what every other machine sees next)
#   pushed    the same copy through a fresh serve from a repository the
#             closure was pushed to with nixoci push (today's registry
#             path: a closure artifact, path tags)
# Each cell is the median of ROUNDS rounds (default 3), the four measured
# in turn in each round; it prints a Markdown table with ratios, serve's
# peak RSS during the cold pull, and the load average.
#
# Usage: bench/pull.sh                 (some minutes)
#        ROUNDS=5 bench/pull.sh
#        bench/pull.sh --big           (one 1 GiB NAR pulled through: time and
#                                       serve's peak RSS; needs ~6 GiB of disk)
# As root, with Nix, nginx and docker-registry installed (.ci/run installs
# them). Extra serve flags: SERVE_FLAGS="..." bench/pull.sh
set -euo pipefail
cd "$(dirname "$0")/.."
big=false
[ "${1:-}" = --big ] && big=true
export NIX_CONFIG="${NIX_CONFIG:-}"$'\nexperimental-features = nix-command\nbuild-users-group =\nsubstituters =\nsandbox = false\nnarinfo-cache-positive-ttl = 0\nnarinfo-cache-negative-ttl = 0'
go build -o bin/nixoci ./cmd/nixoci
go build -o bin/latencyproxy ./bench/latencyproxy
NIXOCI=$PWD/bin/nixoci
work=$(mktemp -d /tmp/nixoci-bench-pull.XXXXXX)
shm=$(mktemp -d /dev/shm/nixoci-bench-pull.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work" "$shm"; }
trap cleanup EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitfor() { for _ in $(seq 400); do curl -sf -o /dev/null "$1" && return; sleep 0.05; done; echo "not ready: $1" >&2; tail -5 "$work"/*.log >&2; exit 1; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
metric() { curl -s "$1/metrics" | awk -v s="$2" '$1 == s { print $2 }'; }

nix-store --generate-binary-cache-key cache.nixos.org-1 "$work/up.sec" "$work/up.pub"
pub=$(cat "$work/up.pub")

# The registry, 20 ms away.
regport=$(freeport)
mkdir -p "$work/reg"
cat > "$work/reg.yml" <<EOC
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/reg}}
http: {addr: 127.0.0.1:$regport}
EOC
docker-registry serve "$work/reg.yml" >"$work/registry.log" 2>&1 & pids+=($!)
waitfor "http://127.0.0.1:$regport/v2/"

# A latency proxy in front of $1 with delay $2; sets addr.
proxy() {
  : >"$work/proxy.addr"
  ./bin/latencyproxy -to "$1" -delay "$2" >"$work/proxy.addr" 2>>"$work/proxy.log" & pids+=($!)
  for _ in $(seq 200); do [ -s "$work/proxy.addr" ] && break; sleep 0.02; done
  addr=$(cat "$work/proxy.addr")
}
proxy "http://127.0.0.1:$regport" 20ms; reg=$addr

# The upstream: nginx serving the cache directory, 20 ms away.
ngport=$(freeport)
mkdir -p "$work/up"
cat > "$work/nginx.conf" <<EOC
user root; worker_processes auto; daemon off; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 4096; }
http { access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  types { text/x-nix-narinfo narinfo; } default_type application/octet-stream;
  server { listen 127.0.0.1:$ngport; root $work/up; } }
EOC
nginx -c "$work/nginx.conf" & pids+=($!)
proxy "http://127.0.0.1:$ngport" 20ms; upstream="http://$addr"

# A fresh serve (args: --from and more); sets url and spid.
serve() {
  local port; port=$(freeport)
  # shellcheck disable=SC2086
  "$NIXOCI" serve --listen "127.0.0.1:$port" --access-log=false ${SERVE_FLAGS:-} "$@" >"$work/serve-$port.log" 2>&1 & pids+=($!)
  spid=$!
  waitfor "http://127.0.0.1:$port/nix-cache-info"
  url="http://127.0.0.1:$port"
}
stop_serve() { kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; }
hwm() { awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
copy() { # URL ROOT: seconds to substitute the closure into an empty store
  local store t0; store=$(mktemp -d "$shm/store.XXXXXX")
  t0=$(now)
  nix copy --from "$1" --to "$store" --option trusted-public-keys "$pub" "$2" >/dev/null 2>>"$work/nix.log" || { tail "$work/nix.log" >&2; exit 1; }
  secs "$t0" "$(now)"
  rm -rf "$store"
}
# waits until serve at $1 stored $2 paths pulled through and the closure
# of the root
stored() {
  local n c
  for _ in $(seq 1200); do
    n=$(metric "$1" 'nixoci_upstream_stores_total{outcome="stored"}')
    c=$(metric "$1" 'nixoci_upstream_closures_total')
    [ "${n:-0}" = "$2" ] && [ "${c:-0}" = 1 ] && return
    sleep 0.1
  done
  echo "serve stored ${n:-0} of $2 paths, ${c:-0} closures" >&2; tail "$work"/serve-*.log >&2; exit 1
}

if $big; then
  # One path holding a 1 GiB file of random bytes, zstd (what xz would
  # take minutes to compress), pulled through by curl-speed Nix.
  root=$(nix-build --no-out-link -E "derivation { name = \"pull-big\"; system = builtins.currentSystem; builder = \"/bin/sh\"; PATH = \"/usr/bin:/bin\"; args = [ \"-c\" \"head -c 1073741824 /dev/urandom > \$out\" ]; seed = \"$RANDOM\"; }")
  nix copy --to "file://$work/up?secret-key=$work/up.sec&compression=zstd" "$root"
  serve --from "$reg/big-$RANDOM" --upstream "$upstream" --upstream-key "$pub" --blob-cache-size 4GiB
  t=$(copy "$url" "$root")
  stored "$url" 1
  echo "1 GiB NAR pulled through: nix copy $t s; serve's peak RSS $(hwm "$spid") MiB (load $(cut -d' ' -f1-3 /proc/loadavg))"
  stop_serve
  exit 0
fi

root=$(nix-instantiate --eval --read-write-mode -E "import ./bench/remote-closures.nix { levels = 15; width = 20; kb = 50; seed = \"pull\"; }" | tr -d '"')
npaths=$(nix-store -qR "$root" | wc -l)
nix copy --to "file://$work/up?secret-key=$work/up.sec" "$root" >>"$work/nix.log" 2>&1
pushed="$reg/pushed-$RANDOM"
"$NIXOCI" push --to "$pushed:c" --from-cache "file://$work/up" "$root" >/dev/null 2>>"$work/push.log"

rounds=${ROUNDS:-3}
declare -A vals
add() { vals[$1]="${vals[$1]:-} $2"; }
med() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.2f}')" ${vals[$1]}; }
loads=()
for r in $(seq "$rounds"); do
  add direct "$(copy "$upstream" "$root")"
  repo="$reg/pull-$r-$RANDOM"
  serve --from "$repo" --upstream "$upstream" --upstream-key "$pub"
  add pull "$(copy "$url" "$root")"
  stored "$url" "$npaths"
  add rss "$(hwm "$spid")"
  stop_serve
  serve --from "$repo"; add pulled "$(copy "$url" "$root")"; stop_serve
  serve --from "$pushed"; add pushed "$(copy "$url" "$root")"; stop_serve
  loads+=("$(cut -d' ' -f1 /proc/loadavg)")
done
d=$(med direct); p=$(med pull); pd=$(med pulled); ps=$(med pushed)
echo "Medians of $rounds rounds; ${npaths}-path DAG, upstream and registry each 20 ms away; load average at the end of each round: ${loads[*]}."
echo "| nix copy --from | seconds | ratio |"
echo "|---|---|---|"
echo "| the upstream directly (nginx, 20 ms) | $d s | 1.00× |"
echo "| serve --upstream, cold (pulls and stores every path) | $p s | **$(ratio "$p" "$d")×** of direct |"
echo "| fresh serve, registry the pull filled | $pd s | **$(ratio "$pd" "$ps")×** of pushed |"
echo "| fresh serve, registry nixoci push filled | $ps s | 1.00× |"
echo "serve's peak RSS during the cold pull (median): $(med rss) MiB"
