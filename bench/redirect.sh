#!/usr/bin/env bash
# Redirect benchmark: serve's CPU time per GB of NAR delivered, with and
# without --redirect-blobs, in one run. docker-registry runs with the
# redirect storage middleware, nginx serves its storage directory at the
# redirect base URL (as object storage would); a client (curl -L)
# downloads the NAR of a 1 GiB store path (bench/big-file.nix) N times
# through each serve. CPU time is read from /proc/PID/stat (utime+stime)
# before and after. Usage: bench/redirect.sh [N]   (as root; Nix, nginx,
# docker-registry)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
export NIX_CONFIG="${NIX_CONFIG:-}"$'\nexperimental-features = nix-command\nbuild-users-group =\nsubstituters =\nsandbox = false'
go build -o bin/nixoci ./cmd/nixoci
NIXOCI=$PWD/bin/nixoci
work=$(mktemp -d /tmp/nixoci-bench-redirect.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitfor() { for _ in $(seq 400); do curl -sf -o /dev/null "$1" && return; sleep 0.05; done; echo "not ready: $1" >&2; exit 1; }
cputicks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

mkdir -p "$work/storage"
ngport=$(freeport); regport=$(freeport)
cat > "$work/nginx.conf" <<EOC
user root; worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 1024; }
http { access_log off; sendfile on; server { listen 127.0.0.1:$ngport; root $work/storage; } }
EOC
nginx -c "$work/nginx.conf" & pids+=($!)
cat > "$work/reg.yml" <<EOC
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/storage}, redirect: {disable: false}}
middleware: {storage: [{name: redirect, options: {baseurl: "http://127.0.0.1:$ngport/"}}]}
http: {addr: 127.0.0.1:$regport}
EOC
docker-registry serve "$work/reg.yml" >"$work/registry.log" 2>&1 & pids+=($!)
waitfor "http://127.0.0.1:$regport/v2/"

root=$(nix-build bench/big-file.nix --no-out-link)
"$NIXOCI" push --to "127.0.0.1:$regport/big:c" "$root" >/dev/null 2>&1
hash=$(basename "$root" | cut -c1-32)

measure() { # measure NAME FLAGS...: CPU seconds per GB delivered
  local port pid; port=$(freeport)
  # shellcheck disable=SC2068
  "$NIXOCI" serve --listen "127.0.0.1:$port" --from "127.0.0.1:$regport/big" --access-log=false --blob-cache-size 0 $@ >"$work/serve-$port.log" 2>&1 & pids+=($!)
  pid=$!
  waitfor "http://127.0.0.1:$port/nix-cache-info"
  local url; url=$(curl -s "http://127.0.0.1:$port/$hash.narinfo" | sed -n 's/^URL: //p')
  local before bytes=0; before=$(cputicks "$pid")
  for _ in $(seq "$rounds"); do
    n=$(curl -sL -o /dev/null -w '%{size_download}' "http://127.0.0.1:$port/$url")
    bytes=$((bytes + n))
  done
  local ticks=$(( $(cputicks "$pid") - before ))
  python3 -c "hz=$(getconf CLK_TCK); print(f'{$ticks/hz/($bytes/1e9):.3f} s/GB ({$bytes/1e9:.2f} GB, {$ticks/hz:.2f} s CPU)')"
}
plain=$(measure)
redirected=$(measure --redirect-blobs)
echo "| serve's CPU per GB of NAR delivered | |"
echo "|---|---|"
echo "| streaming from the registry | $plain |"
echo "| --redirect-blobs (client fetches from storage) | $redirected |"
