#!/usr/bin/env bash
# Chunked upload benchmark, side by side in one run: nixoci push of the
# benchmark closure (bench/go-closure.nix, ~175 MB of NAR) straight to
# docker-registry in one request per blob (--chunk-size 0), versus through
# nginx as a reverse proxy with a body limit, in chunks of 4, 8 (the
# default), 16 and 64 MiB; and, to tell the two costs apart, straight in
# 8 MiB chunks and through nginx in one request per blob. nginx's body
# limit is 100m (Cloudflare's), so that 64 MiB chunks and whole blobs
# pass. One nginx server streams bodies on as they come
# (proxy_request_buffering off, as registry set-ups such as Harbor's do),
# another buffers each body first (nginx's default); both refuse a body
# over the limit with 413 before reading it. Every push goes to a fresh
# repository, so every blob is sent; runs are interleaved and the best
# and median of $RUNS are reported, with --compression none (each blob is its NAR:
# upload-bound) and with the default zstd. Storage and nginx's buffers are
# in /dev/shm.
# Usage: bench/chunked.sh   (as root; Nix, nginx, docker-registry installed)
set -euo pipefail
cd "$(dirname "$0")/.."
export NIX_CONFIG="${NIX_CONFIG:-}"$'\nexperimental-features = nix-command\nbuild-users-group =\nsubstituters =\nsandbox = false'
RUNS=${RUNS:-5}
go build -o bin/nixoci ./cmd/nixoci
NIXOCI=$PWD/bin/nixoci
work=$(mktemp -d /dev/shm/nixoci-bench-chunked.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitfor() { for _ in $(seq 200); do curl -s -o /dev/null "$1" && return; sleep 0.05; done; echo "not ready: $1"; exit 1; }

root=$(nix-build bench/go-closure.nix --no-out-link)
closure=$(nix-store --query --requisites "$root")
narsize=$(nix path-info --json $closure | tr ',' '\n' | sed -n 's/.*"narSize":\([0-9]*\).*/\1/p' | paste -sd+ | bc)
tar -cf - $closure 2>/dev/null | cat > /dev/null # warm the page cache

regport=$(freeport)
mkdir -p "$work/reg"
cat > "$work/reg.yml" <<EOC
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/reg}}
http: {addr: 127.0.0.1:$regport}
EOC
docker-registry serve "$work/reg.yml" >"$work/reg.log" 2>&1 & pids+=($!)
waitfor "http://127.0.0.1:$regport/v2/"
ngport=$(freeport); nbport=$(freeport)
mkdir -p "$work/nginx"
cat > "$work/nginx.conf" <<EOC
user root; worker_processes 2; daemon off; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 1024; }
http { access_log off; client_max_body_size 100m;
  client_body_temp_path $work/nginx/body; proxy_temp_path $work/nginx/proxy;
  proxy_set_header Host \$http_host; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off;
  server { listen 127.0.0.1:$ngport; location / { proxy_pass http://127.0.0.1:$regport; proxy_request_buffering off; } }
  server { listen 127.0.0.1:$nbport; location / { proxy_pass http://127.0.0.1:$regport; } } }
EOC
nginx -c "$work/nginx.conf" & pids+=($!)
waitfor "http://127.0.0.1:$ngport/v2/"
waitfor "http://127.0.0.1:$nbport/v2/"

# push NAME HOSTPORT CHUNK COMPRESSION: seconds of one push to a fresh repository.
n=0
push() {
  n=$((n + 1))
  local start end
  start=$(date +%s.%N)
  "$NIXOCI" push --chunk-size "$3" --compression "$4" --to "$2/run$n:b" "$root" > "$work/push.out" 2> "$work/push.err" || {
    cat "$work/push.err"; exit 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc >> "$work/t-$1-$4"
}
configs="direct:127.0.0.1:$regport:0 direct8:127.0.0.1:$regport:8MiB
  nginx0:127.0.0.1:$ngport:0 nginx4:127.0.0.1:$ngport:4MiB nginx8:127.0.0.1:$ngport:8MiB
  nginx16:127.0.0.1:$ngport:16MiB nginx64:127.0.0.1:$ngport:64MiB
  buffered0:127.0.0.1:$nbport:0 buffered8:127.0.0.1:$nbport:8MiB"
for comp in none zstd; do
  for _ in $(seq "$RUNS"); do
    for c in $configs; do
      IFS=: read -r name host port chunk <<< "$c"
      push "$name" "$host:$port" "$chunk" "$comp"
    done
  done
done

# Other work on the machine only adds time, so the best of the runs is
# the steadiest figure; the median is shown beside it.
median() { sort -n "$1" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
best() { sort -n "$1" | head -1; }
ratio() { echo "scale=2; $1 / $2" | bc | sed 's/^\./0./'; }
row() { # NAME LABEL
  local out="| $2 |" comp b m
  for comp in none zstd; do
    b=$(best "$work/t-$1-$comp"); m=$(median "$work/t-$1-$comp")
    out+=" $(printf %.2f "$b") ($(printf %.2f "$m")) | $(ratio "$b" "$(best "$work/t-direct-$comp")")× ($(ratio "$m" "$(median "$work/t-direct-$comp")")×) |"
  done
  echo "$out"
}
cat <<EOT
Closure: $(echo "$closure" | wc -l) store paths, $(echo "scale=1; $narsize / 1000000" | bc) MB of NAR. $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg). Best (median) of $RUNS interleaved runs.

| push | --compression none: s | vs direct | zstd (default): s | vs direct |
|---|---|---|---|---|
$(row direct "straight to docker-registry, one request per blob (\`--chunk-size 0\`)")
$(row direct8 "straight to docker-registry, 8 MiB chunks (what chunks cost)")
$(row nginx0 "through nginx, one request per blob (what the proxy costs; under its limit here)")
$(row nginx4 "through nginx, 4 MiB chunks")
$(row nginx8 "through nginx, **8 MiB chunks (default)**")
$(row nginx16 "through nginx, 16 MiB chunks")
$(row nginx64 "through nginx, 64 MiB chunks")
$(row buffered0 "through nginx buffering bodies, one request per blob")
$(row buffered8 "through nginx buffering bodies, 8 MiB chunks")
EOT
