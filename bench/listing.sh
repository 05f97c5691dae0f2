#!/usr/bin/env bash
# NAR listings (`GET /<hash>.ls`) of a path of 5,000 files, side by side in
# one run: nginx serving the `nix copy --to 'file://…?write-nar-listing=true'`
# directory versus nixoci serve answering the listing Nix uploaded (stored
# as an artifact in an image layout); then the first request for a
# listing serve makes from the NAR, and its memory. Medians of ROUNDS
# rounds (default 3), interleaved. Usage: bench/listing.sh (as root; Nix,
# nginx installed).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
export NIX_CONFIG="${NIX_CONFIG:-}"$'\nexperimental-features = nix-command\nbuild-users-group =\nsubstituters =\nsandbox = false'
go build -o bin/nixoci ./cmd/nixoci
go build -o bin/httpload ./bench/httpload
work=$(mktemp -d /tmp/nixoci-bench-listing.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitfor() { for _ in $(seq 200); do curl -sf -o /dev/null "$1" && return; sleep 0.05; done; echo "not ready: $1"; exit 1; }

p=$(nix-build bench/listing.nix --no-out-link)
h=$(basename "$p" | cut -d- -f1)
nix copy --to "file://$work/cache?write-nar-listing=true&compression=zstd" "$p"
nix copy --to "file://$work/plain?compression=zstd" "$p"
lsize=$(stat -c %s "$work/cache/$h.ls")

ngport=$(freeport)
cat > "$work/nginx.conf" <<EOC
user root; worker_processes auto; daemon off; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 4096; }
http { access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  types { application/json ls; } default_type application/octet-stream;
  server { listen 127.0.0.1:$ngport; root $work/cache; } }
EOC
nginx -c "$work/nginx.conf" & pids+=($!)
NGINX=http://127.0.0.1:$ngport
waitfor "$NGINX/nix-cache-info"

# The listing Nix uploads, stored by serve.
htpasswd -bcB "$work/creds" bench bench-pw >/dev/null 2>&1
chmod 600 "$work/creds"
uport=$(freeport)
./bin/nixoci serve --listen "127.0.0.1:$uport" --from "oci:$work/layout" --upload --credentials "$work/creds" --access-log=false >"$work/serve-up.log" 2>&1 & pids+=($!)
waitfor "http://127.0.0.1:$uport/nix-cache-info"
printf 'machine 127.0.0.1 login bench password bench-pw\n' > "$work/netrc"
nix copy --to "http://127.0.0.1:$uport?write-nar-listing=true&compression=zstd" --option netrc-file "$work/netrc" "$p"
sport=$(freeport)
./bin/nixoci serve --listen "127.0.0.1:$sport" --from "oci:$work/layout" --access-log=false >"$work/serve.log" 2>&1 & pids+=($!)
SERVE=http://127.0.0.1:$sport
waitfor "$SERVE/nix-cache-info"
cmp <(curl -sf "$SERVE/$h.ls") "$work/cache/$h.ls"

rate() { echo "/$h.ls" | ./bin/httpload -identity -c 16 -repeat 20000 "$1" | tee -a "$work/load.log" | sed -n 's/.* failed, \([0-9]*\) req\/s.*/\1/p'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for _ in $(seq "$rounds"); do rate $NGINX >> "$work/r-nginx"; rate $SERVE >> "$work/r-serve"; done
grep -q " 0 failed" "$work/load.log" || { echo "failures:"; cat "$work/load.log"; exit 1; }
n_nginx=$(median < "$work/r-nginx"); n_serve=$(median < "$work/r-serve")

# A path pushed without a listing: serve makes it from the NAR on the
# first request (each round a fresh server, so the first request is cold).
./bin/nixoci push --from-cache "file://$work/plain" --to "oci:$work/plain-layout:p" "$p" >/dev/null 2>&1
for _ in $(seq "$rounds"); do
  gport=$(freeport)
  ./bin/nixoci serve --listen "127.0.0.1:$gport" --from "oci:$work/plain-layout" --access-log=false --catalog-interval=-1s >"$work/serve-gen.log" 2>&1 & gpid=$!
  waitfor "http://127.0.0.1:$gport/nix-cache-info"
  before=$(awk '/VmRSS/ {print $2}' /proc/$gpid/status)
  curl -s -o "$work/gen.ls" -w '%{time_total}\n' "http://127.0.0.1:$gport/$h.ls" >> "$work/t-first"
  curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$gport/$h.ls" >> "$work/t-second"
  echo $(( $(awk '/VmHWM/ {print $2}' /proc/$gpid/status) - before )) >> "$work/m-gen"
  cmp "$work/gen.ls" "$work/cache/$h.ls"
  kill $gpid; wait $gpid 2>/dev/null || true
done
r() { echo "scale=2; $1 / $2" | bc; }
cat <<EOT
Listing of a path of 5,000 files: $lsize bytes; NAR $(nix path-info --json "$p" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d[0]["narSize"])') bytes (zstd). $(nproc) cores shared by server and client; medians of $rounds rounds.

| measurement | nginx (static \`nix copy\` dir) | nixoci serve, stored listing | ratio |
|---|---|---|---|
| \`GET /<hash>.ls\` req/s, httpload -c16 | $n_nginx | $n_serve | **$(r $n_nginx $n_serve)×** nginx's time per request |

| listing made from the NAR (path pushed without one) | figure |
|---|---|
| first request, s | $(median < "$work/t-first") |
| second request (kept in memory), s | $(median < "$work/t-second") |
| peak RSS growth of serve over the first request, KiB | $(median < "$work/m-gen") |
EOT
