#!/usr/bin/env bash
# Remote-registry benchmark, side by side in one run: docker-registry made
# remote by a latency proxy (bench/latencyproxy) at several delays, versus
# nginx serving the directory `nix copy --to file://` wrote for the same
# closure (what a user would run otherwise), on loopback and behind the
# latency proxy at the same delay as the registry (a binary cache as far
# away as the registry: Nix alone pays every round trip).
#
# For each closure shape and delay it measures, with Nix's narinfo disk
# cache off:
#   narinfos  nix path-info --store http://SERVE -r ROOT     (serve cold;
#             and straight from nginx, on loopback and at the delay)
#   copy      nix copy --from http://SERVE into an empty store (serve cold;
#             and from nginx, on loopback and at the delay)
#   again     the same copy into another empty store through the same serve
#             (warm: narinfos and NARs cached, the registry idle), which
#             tells serve's own cost from the registry's on a machine
#             where both share the cores
#   push      nixoci push of the closure into an empty repository
#   repush    the same push again (everything stored)
# and prints a Markdown table with ratios to nginx (narinfos, copy) and to
# the push without delay.
#
# Usage: bench/remote.sh           (chain of 332 paths and a DAG of 301,
#                                   delays 0 5 20 50 ms; some minutes)
#        bench/remote.sh --quick   (151-path DAG at 20 ms: one line)
#        ROUNDS=5 bench/remote.sh  (each cell the median of 5 rounds; default 3,
#                                   1 with --quick)
#        DELAYS="20" bench/remote.sh (only these delays, in ms)
# As root, with Nix, nginx and docker-registry installed (.ci/run installs
# them). Extra nixoci serve flags: SERVE_FLAGS="..." bench/remote.sh
set -euo pipefail
cd "$(dirname "$0")/.."
quick=false
[ "${1:-}" = --quick ] && quick=true
export NIX_CONFIG="${NIX_CONFIG:-}"$'\nexperimental-features = nix-command\nbuild-users-group =\nsubstituters =\nsandbox = false\nnarinfo-cache-positive-ttl = 0\nnarinfo-cache-negative-ttl = 0'
go build -o bin/nixoci ./cmd/nixoci
go build -o bin/latencyproxy ./bench/latencyproxy
NIXOCI=$PWD/bin/nixoci
work=$(mktemp -d /tmp/nixoci-bench-remote.XXXXXX)
shm=$(mktemp -d /dev/shm/nixoci-bench-remote.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work" "$shm"; }
trap cleanup EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitfor() { for _ in $(seq 400); do curl -sf -o /dev/null "$1" && return; sleep 0.05; done; echo "not ready: $1" >&2; tail -5 "$work"/*.log >&2; exit 1; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

closure() { nix-instantiate --eval --read-write-mode -E "import ./bench/remote-closures.nix { $1 }" | tr -d '"'; }
if $quick; then
  shapes=("dag:levels = 10; width = 15; kb = 50;")
  delays=(20)
else
  shapes=("chain:shape = \"chain\"; n = 332; kb = 100;" "dag:levels = 15; width = 20; kb = 50;")
  delays=(0 5 20 50)
fi
[ -n "${DELAYS:-}" ] && read -r -a delays <<<"$DELAYS"

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

ngport=$(freeport)
cat > "$work/nginx.conf" <<EOC
user root; worker_processes auto; daemon off; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 4096; }
http { access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  types { text/x-nix-narinfo narinfo; } default_type application/octet-stream;
  server { listen 127.0.0.1:$ngport; root $work/cache; } }
EOC
NGINX=http://127.0.0.1:$ngport

# A proxy with the given delay in front of the registry (or of the URL
# given second); sets addr. (Functions that start processes set variables
# instead of printing, so they run in this shell and pids keeps the
# processes.)
proxy() {
  : >"$work/proxy.addr"
  ./bin/latencyproxy -to "${2:-http://127.0.0.1:$regport}" -delay "$1ms" >"$work/proxy.addr" 2>"$work/proxy-$1.log" & pids+=($!)
  for _ in $(seq 200); do [ -s "$work/proxy.addr" ] && break; sleep 0.02; done
  addr=$(cat "$work/proxy.addr")
}
# A fresh (cold) nixoci serve from a repository; sets url.
serve() {
  local port; port=$(freeport)
  # shellcheck disable=SC2086
  "$NIXOCI" serve --listen "127.0.0.1:$port" --from "$1" --access-log=false ${SERVE_FLAGS:-} >"$work/serve-$port.log" 2>&1 & pids+=($!)
  waitfor "http://127.0.0.1:$port/nix-cache-info"
  url="http://127.0.0.1:$port"
}
stop_last() { kill "${pids[-1]}" 2>/dev/null || true; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }
narinfos() { # URL ROOT: seconds for every narinfo of the closure
  local t0; t0=$(now)
  nix path-info --store "$1" -r "$2" >/dev/null 2>>"$work/nix.log" || { tail "$work/nix.log" >&2; exit 1; }
  secs "$t0" "$(now)"
}
copy() { # URL ROOT: seconds to substitute the closure into an empty store
  local store t0; store=$(mktemp -d "$shm/store.XXXXXX")
  t0=$(now)
  nix copy --from "$1" --to "$store" --no-check-sigs "$2" >/dev/null 2>>"$work/nix.log" || { tail "$work/nix.log" >&2; exit 1; }
  secs "$t0" "$(now)"
  rm -rf "$store"
}

# Every cell is the median of ROUNDS rounds (default 3; 1 with --quick),
# each round measuring nginx, the push without delay and every delay in
# turn, so that drift on a shared machine moves them alike.
rounds=${ROUNDS:-3}
$quick && rounds=${ROUNDS:-1}
declare -A vals roots npaths
add() { vals[$1]="${vals[$1]:-} $2"; }
med() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.2f}')" ${vals[$1]}; }
pct() { python3 -c "print(f'{100*$1/$2:.1f}')"; }
names=()
for s in "${shapes[@]}"; do
  name=${s%%:*}; root=$(closure "${s#*:}"); names+=("$name")
  roots[$name]=$root
  npaths[$name]=$(nix-store -qR "$root" | wc -l)
  rm -rf "$work/cache-$name"
  nix copy --to "file://$work/cache-$name?compression=zstd" "$root" >>"$work/nix.log" 2>&1
done
for r in $(seq "$rounds"); do
  for name in "${names[@]}"; do
    root=${roots[$name]}
    rm -f "$work/cache"; ln -s "$work/cache-$name" "$work/cache"
    nginx -c "$work/nginx.conf" & pids+=($!)
    waitfor "$NGINX/nix-cache-info"
    add "$name|ng_narinfos" "$(narinfos "$NGINX" "$root")"
    add "$name|ng_copy" "$(copy "$NGINX" "$root")"
    for d in "${delays[@]}"; do
      proxy "$d" "$NGINX"
      add "$name|$d|ngfar_narinfos" "$(narinfos "http://$addr" "$root")"
      add "$name|$d|ngfar_copy" "$(copy "http://$addr" "$root")"
      stop_last # the proxy
    done
    stop_last
    t0=$(now); "$NIXOCI" push --to "127.0.0.1:$regport/base-$name-$r-$RANDOM:c" "$root" >/dev/null 2>>"$work/push.log"
    add "$name|base_push" "$(secs "$t0" "$(now)")"
    for d in "${delays[@]}"; do
      proxy "$d"
      repo="$addr/bench-$name-$d-$r-$RANDOM"
      t0=$(now); "$NIXOCI" push --to "$repo:c" "$root" >/dev/null 2>>"$work/push.log"; add "$name|$d|push" "$(secs "$t0" "$(now)")"
      t0=$(now); "$NIXOCI" push --to "$repo:c" "$root" >/dev/null 2>>"$work/push.log"; add "$name|$d|repush" "$(secs "$t0" "$(now)")"
      serve "$repo"; add "$name|$d|narinfos" "$(narinfos "$url" "$root")"; stop_last
      serve "$repo"; add "$name|$d|copy" "$(copy "$url" "$root")"; add "$name|$d|again" "$(copy "$url" "$root")"; stop_last
      stop_last # the proxy
    done
  done
done

rows=()
for name in "${names[@]}"; do
  ngn=$(med "$name|ng_narinfos"); ngc=$(med "$name|ng_copy"); base=$(med "$name|base_push")
  for d in "${delays[@]}"; do
    n=$(med "$name|$d|narinfos"); c=$(med "$name|$d|copy"); again=$(med "$name|$d|again")
    push=$(med "$name|$d|push"); repush=$(med "$name|$d|repush")
    nfn=$(med "$name|$d|ngfar_narinfos"); nfc=$(med "$name|$d|ngfar_copy")
    rows+=("| $name (${npaths[$name]} paths) | $d ms | $n s | $ngn s | **$(ratio "$n" "$ngn")×** | $nfn s | **$(ratio "$n" "$nfn")×** | $c s | $ngc s | **$(ratio "$c" "$ngc")×** | $nfc s | **$(ratio "$c" "$nfc")×** | $again s (**$(ratio "$again" "$ngc")×**) | $push s | $base s | **$(ratio "$push" "$base")×** | $repush s ($(pct "$repush" "$push")%) |")
    if $quick; then
      echo "quick ($name, ${npaths[$name]} paths, ${d} ms): narinfos $(ratio "$n" "$ngn")× nginx on loopback ($n s vs $ngn s), $(ratio "$n" "$nfn")× nginx ${d} ms away ($nfn s); nix copy $(ratio "$c" "$ngc")× nginx on loopback ($c s vs $ngc s), $(ratio "$c" "$nfc")× nginx ${d} ms away ($nfc s); again, serve warm, $(ratio "$again" "$ngc")×; push $(ratio "$push" "$base")× no-delay push ($push s vs $base s), re-push $(pct "$repush" "$push")% of push"
    fi
  done
done
$quick && exit 0
echo "Medians of $rounds rounds."
echo "| closure | delay | narinfos cold (serve) | nginx, loopback | ratio | nginx, same delay | ratio | nix copy (serve) | nginx, loopback | ratio | nginx, same delay | ratio | nix copy again (serve warm) | push | push, no delay | ratio | re-push |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
