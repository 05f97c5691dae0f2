#!/usr/bin/env bash
# Fetching NARs ahead, where it pays and where it does not (issue 23),
# side by side in one run. A closure of real directories (default about
# 330 paths, 1.1 GB: directories two levels under /usr/share, /usr/lib
# and /usr/local/go, each a store path, under a root referring to all of
# them) is copied by Nix 2.8 with `nix copy --from` into an empty store
# under /dev/shm:
#   nginx          nginx on loopback serving what `nix copy --to file://`
#                  wrote (zstd): what a user would run otherwise
#   layout …       nixoci serve over an image layout holding the same bytes
#   registry …     serve over docker-registry on loopback
#   registry 20 ms serve over the same registry behind the latency proxy
#                  (bench/latencyproxy) at DELAY ms
# each serve fresh (cold) and run four ways: default (--nar-ahead auto),
# --nar-ahead off, --nar-ahead on, and (layout only) --blob-cache-size 0
# --prefetch 0, the issue's "everything ahead off". Every cell is the
# median of ROUNDS rounds (default 3), each round running every variant
# in turn; it prints a Markdown table with ratios to nginx and to the
# same backend with NARs ahead off, and the load average.
#
# Usage: bench/ahead.sh              (some minutes; ~4 GB of disk)
#        ROUNDS=5 MB=600 PATHS=200 DELAY=20 bench/ahead.sh
# As root, with Nix, nginx and docker-registry installed (.ci/run installs
# them).
set -euo pipefail
cd "$(dirname "$0")/.."
export NIX_CONFIG="${NIX_CONFIG:-}"$'\nexperimental-features = nix-command\nbuild-users-group =\nsubstituters =\nsandbox = false\nnarinfo-cache-positive-ttl = 0\nnarinfo-cache-negative-ttl = 0'
go build -o bin/nixoci ./cmd/nixoci
go build -o bin/latencyproxy ./bench/latencyproxy
NIXOCI=$PWD/bin/nixoci
rounds=${ROUNDS:-3} mb=${MB:-1100} maxpaths=${PATHS:-330} delay=${DELAY:-20}
work=$(mktemp -d /tmp/nixoci-bench-ahead.XXXXXX)
shm=$(mktemp -d /dev/shm/nixoci-bench-ahead.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work" "$shm"; }
trap cleanup EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitfor() { for _ in $(seq 400); do curl -sf -o /dev/null "$1" && return; sleep 0.05; done; echo "not ready: $1" >&2; tail -5 "$work"/*.log >&2; exit 1; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }

# The closure: directories two levels down, in an order fixed by their
# names' hashes (so the sources mix), readable, holding only files,
# directories and symlinks, 192 KiB to 100 MiB each, until MB or PATHS.
find /usr/share /usr/lib /usr/local/go -mindepth 2 -maxdepth 2 -type d 2>/dev/null | sort > "$work/cand"
: > "$work/dirs"
total=0 n=0
while read -r _ d; do
  kb=$(du -s --block-size=1K "$d" 2>/dev/null | cut -f1) || continue
  [ "$kb" -ge 192 ] && [ "$kb" -le 102400 ] || continue
  [ -z "$(find "$d" \( ! -readable -o -type s -o -type p -o -type b -o -type c \) -print -quit 2>/dev/null)" ] || continue
  echo "$d" >> "$work/dirs"; total=$((total + kb)); n=$((n + 1))
  [ "$total" -ge $((mb * 1024)) ] || [ "$n" -ge "$maxpaths" ] && break
done < <(while read -r d; do echo "$(echo -n "$d" | sha256sum | cut -c1-16) $d"; done < "$work/cand" | sort)
python3 - "$work/dirs" > "$work/closure.nix" <<'EOF'
import json, re, sys
dirs = [l.strip() for l in open(sys.argv[1]) if l.strip()]
print("let paths = [")
for i, d in enumerate(dirs):
    name = re.sub(r"[^A-Za-z0-9+._?=-]", "-", "bench-ahead-%d-%s" % (i, d.strip("/").replace("/", "-")))[:200]
    print("  (builtins.path { path = %s; name = %s; })" % (json.dumps(d), json.dumps(name)))
print("]; in derivation { name = \"bench-ahead-root\"; system = builtins.currentSystem; builder = \"/bin/sh\";")
print("  args = [ \"-c\" \"echo $paths > $out\" ]; paths = paths; }")
EOF
echo "importing $n directories ($((total / 1024)) MB on disk) into the store..." >&2
root=$(nix-build "$work/closure.nix" --no-out-link 2>>"$work/nix.log") || { tail "$work/nix.log" >&2; exit 1; }
npaths=$(nix-store -qR "$root" | wc -l)
narmb=$(nix path-info -S "$root" | awk '{printf "%.0f", $2 / 1e6}')
nix copy --to "file://$work/cache?compression=zstd" "$root" >>"$work/nix.log" 2>&1
"$NIXOCI" push --from-cache "file://$work/cache" --to "oci:$work/layout:big" "$root" >/dev/null 2>>"$work/push.log"

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
"$NIXOCI" push --from-cache "file://$work/cache" --to "127.0.0.1:$regport/big:big" "$root" >/dev/null 2>>"$work/push.log"
: >"$work/proxy.addr"
./bin/latencyproxy -to "http://127.0.0.1:$regport" -delay "${delay}ms" >"$work/proxy.addr" 2>"$work/proxy.log" & pids+=($!)
for _ in $(seq 200); do [ -s "$work/proxy.addr" ] && break; sleep 0.02; done
far=$(cat "$work/proxy.addr")

ngport=$(freeport)
cat > "$work/nginx.conf" <<EOC
user root; worker_processes auto; daemon off; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 4096; }
http { access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  types { text/x-nix-narinfo narinfo; } default_type application/octet-stream;
  server { listen 127.0.0.1:$ngport; root $work/cache; } }
EOC
nginx -c "$work/nginx.conf" & pids+=($!)
NGINX=http://127.0.0.1:$ngport
waitfor "$NGINX/nix-cache-info"

copy() { # URL: seconds to substitute the closure into an empty store
  local store t0; store=$(mktemp -d "$shm/store.XXXXXX")
  t0=$(now)
  nix copy --from "$1" --to "$store" --no-check-sigs "$root" >/dev/null 2>>"$work/nix.log" || { tail "$work/nix.log" >&2; exit 1; }
  secs "$t0" "$(now)"
  rm -rf "$store"
}
serve_copy() { # FROM FLAGS...: a fresh serve, one copy through it
  local port from=$1; shift; port=$(freeport)
  "$NIXOCI" serve --listen "127.0.0.1:$port" --from "$from" --access-log=false "$@" >>"$work/serve.log" 2>&1 & pids+=($!)
  waitfor "http://127.0.0.1:$port/nix-cache-info"
  copy "http://127.0.0.1:$port"
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'
}

declare -A vals
add() { vals[$1]="${vals[$1]:-} $2"; }
med() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.2f}')" ${vals[$1]}; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
modes=("default:" "off:--nar-ahead off" "on:--nar-ahead on")
backends=("layout:oci:$work/layout" "registry:127.0.0.1:$regport/big" "far:$far/big")
loads=()
for r in $(seq "$rounds"); do
  add nginx "$(copy "$NGINX")"
  for b in "${backends[@]}"; do
    for m in "${modes[@]}"; do
      # shellcheck disable=SC2086
      add "${b%%:*}|${m%%:*}" "$(serve_copy "${b#*:}" ${m#*:})"
    done
  done
  add "layout|none" "$(serve_copy "oci:$work/layout" --blob-cache-size 0 --prefetch 0)"
  loads+=("$(cut -d' ' -f1 /proc/loadavg)")
  echo "round $r done (load ${loads[-1]})" >&2
done

ng=$(med nginx)
echo "Closure: $npaths paths, $narmb MB of NAR (zstd in the cache), Nix $(nix --version | awk '{print $NF}'), medians of $rounds rounds, load average after each round: ${loads[*]}."
echo
echo "| nix copy --from | seconds | vs nginx | vs NARs ahead off (same backend) |"
echo "|---|---|---|---|"
echo "| nginx, loopback | $ng s | 1.00× | |"
for b in layout registry far; do
  off=$(med "$b|off")
  case $b in layout) label="serve, image layout";; registry) label="serve, docker-registry on loopback";; far) label="serve, docker-registry $delay ms away";; esac
  for m in default off on; do
    v=$(med "$b|$m")
    echo "| $label, $([ $m = default ] && echo "default (auto)" || echo "--nar-ahead $m") | $v s | $(ratio "$v" "$ng")× | **$(ratio "$v" "$off")×** |"
  done
  if [ $b = layout ]; then
    v=$(med "layout|none"); echo "| $label, --blob-cache-size 0 --prefetch 0 | $v s | $(ratio "$v" "$ng")× | $(ratio "$v" "$off")× |"
  fi
done
echo
echo "Decisions serve logged (--nar-ahead auto), by source: fastest recent answer, min–max over the runs:"
sed -n 's/.*msg="NARs of \([^ ]*\) are \([a-z]*\).*fastest_recent_answer=\([^ ]*\).*/\1 \2 \3/p' "$work/serve.log" |
  sed "s|$work|…|" | python3 -c '
import sys, collections, re
def secs(s):
    m = re.match(r"([0-9.]+)(ns|µs|us|ms|s)$", s)
    return float(m.group(1)) * {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1}[m.group(2)] if m else float("nan")
d = collections.defaultdict(list)
for line in sys.stdin:
    src, verb, v = line.split()
    d[(src, verb)].append(secs(v))
for (src, verb), v in sorted(d.items()):
    print(f"- {src}: {verb} ({len(v)}×), {min(v)*1e3:.2f}–{max(v)*1e3:.2f} ms")'
