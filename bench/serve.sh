#!/usr/bin/env bash
# Substituter benchmark, side by side in one run: nixoci serve (from an
# image layout and from a registry) versus nginx serving the directory
# `nix copy --to file://` wrote for the same closures. Prints a Markdown
# table with ratios. Usage: bench/serve.sh   (as root; Nix, nginx, wrk,
# docker-registry installed; takes a few minutes)
#
# bench/serve.sh --narinfo-only [--before REV] [--rounds N] runs only the
# warm narinfo part, with access logs on and off, against nginx; with
# --before it also builds REV (e.g. main) and runs its server the same
# way, interleaved with this tree's, N rounds (default 3). On a machine
# shared with other sessions, give the run a higher scheduling weight than
# theirs (the kernel weighs sessions, not processes, against each other):
#   setsid sh -c 'echo -15 > /proc/self/autogroup; exec bash bench/serve.sh --narinfo-only --before main'
# bench/serve-handler.sh REV measures the same in process, without the
# network.
set -euo pipefail
cd "$(dirname "$0")/.."
narinfo_only=; before=; rounds=3
while [ $# -gt 0 ]; do
  case $1 in
    --narinfo-only) narinfo_only=1 ;;
    --before) before=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    *) echo "usage: bench/serve.sh [--narinfo-only [--before REV] [--rounds N]]" >&2; exit 2 ;;
  esac
  shift
done
export NIX_CONFIG="${NIX_CONFIG:-}"$'\nexperimental-features = nix-command\nbuild-users-group =\nsubstituters =\nsandbox = false'
go build -o bin/nixoci ./cmd/nixoci
go build -o bin/httpload ./bench/httpload
go build -o bin/fileserver ./bench/fileserver
NIXOCI=$PWD/bin/nixoci
work=$(mktemp -d /tmp/nixoci-bench-serve.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitfor() { for _ in $(seq 200); do curl -sf -o /dev/null "$1" && return; sleep 0.05; done; echo "not ready: $1"; tail -5 "$work"/*.log "$work"/nginx.err 2>/dev/null; exit 1; }

many=$(nix-instantiate --eval --read-write-mode -E 'import ./bench/many-paths.nix {}' | tr -d '"')
if [ -n "$narinfo_only" ]; then
  go=; big=
else
  go=$(nix-build bench/go-closure.nix --no-out-link)
  big=$(nix-build bench/big-file.nix --no-out-link)
fi
nix-store --generate-binary-cache-key bench-1 "$work/sec" "$work/pub"
for r in $many $go $big; do
  nix copy --to "file://$work/cache?compression=zstd&secret-key=$work/sec" $r >>"$work/nix-copy.log" 2>&1 || { tail "$work/nix-copy.log"; exit 1; }
done
nix-store --query --requisites $many | sed 's|.*/||; s|-.*||' > "$work/hashes.txt"
npaths=$(wc -l < "$work/hashes.txt")

# The same bytes as artifacts, in a layout and in a registry.
"$NIXOCI" push --from-cache "file://$work/cache" --to "oci:$work/layout:many" $many >/dev/null 2>&1
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
wrkrate() { HASHES="$work/hashes.txt" wrk -t2 -c16 -d10s -s bench/narinfo.lua "$1" | tee -a "$work/wrk.log" | awk '/Requests\/sec/ {print int($2)}'; }
if [ -n "$narinfo_only" ]; then
  . bench/serve-narinfo.sh
  exit
fi
"$NIXOCI" push --from-cache "file://$work/cache" --to "oci:$work/layout:go" $go >/dev/null 2>&1
"$NIXOCI" push --from-cache "file://$work/cache" --to "oci:$work/layout:big" $big >/dev/null 2>&1
regport=$(freeport)
mkdir -p "$work/reg"
cat > "$work/reg.yml" <<EOC
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/reg}}
http: {addr: 127.0.0.1:$regport}
EOC
docker-registry serve "$work/reg.yml" >/dev/null 2>&1 & pids+=($!)
waitfor "http://127.0.0.1:$regport/v2/"
"$NIXOCI" push --from-cache "file://$work/cache" --to "127.0.0.1:$regport/bench:many" --jobs 16 $many >/dev/null 2>&1
"$NIXOCI" push --from-cache "file://$work/cache" --to "127.0.0.1:$regport/bench:big" $big >/dev/null 2>&1

gfport=$(freeport)
./bin/fileserver "127.0.0.1:$gfport" "$work/cache" & pids+=($!)
GOFS=http://127.0.0.1:$gfport
waitfor "$GOFS/nix-cache-info"

serve() { # serve PORT FROM: start nixoci serve, print its pid
  "$NIXOCI" serve --listen "127.0.0.1:$1" --from "$2" --access-log=false >"$work/serve-$1.log" 2>&1 & pids+=($!)
  waitfor "http://127.0.0.1:$1/nix-cache-info"
}
lport=$(freeport); serve $lport "oci:$work/layout"; lpid=${pids[-1]}; LAYOUT=http://127.0.0.1:$lport
rport=$(freeport); serve $rport "127.0.0.1:$regport/bench"; REG=http://127.0.0.1:$rport

coldload() { sed 's|^|/|; s|$|.narinfo|' "$work/hashes.txt" | ./bin/httpload -c 16 "$1"; }

cold_layout=$(coldload $LAYOUT)
cold_reg=$(coldload $REG)
n_nginx=$(wrkrate $NGINX)
n_layout=$(wrkrate $LAYOUT)
n_reg=$(wrkrate $REG)
grep -q "non-200 responses: 0" "$work/wrk.log" || { echo "wrk saw errors"; cat "$work/wrk.log"; exit 1; }

bignar=$(sed -n 's/^URL: //p' "$work/cache/$(basename $big | cut -d- -f1).narinfo")
bigsize=$(stat -c %s "$work/cache/$bignar")
once() { curl -s -o /dev/null -w '%{speed_download}' "$1"; }
best3() { local best=0; for _ in 1 2 3; do s=$(once "$1"); best=$(echo "if ($s > $best) $s else $best" | bc); done; echo "$best"; }
# The first download from serve hashes the blob while sending it; later
# ones send the verified file as it is (sendfile), as nginx does.
nar_first=$(once "$LAYOUT/$bignar")
nar_nginx=$(best3 "$NGINX/$bignar"); nar_layout=$(best3 "$LAYOUT/$bignar"); nar_gofs=$(best3 "$GOFS/$bignar")
nar_reg=$(best3 "$REG/$bignar") # from docker-registry, hashed every time

copytime() { # copytime URL: seconds for nix copy --from URL of the Go closure into an empty store
  local store=$work/store-$RANDOM
  /usr/bin/time -f %e -o "$work/t" nix copy --from "$1" --to "$store" \
    --option trusted-public-keys "$(cat "$work/pub")" \
    --option narinfo-cache-negative-ttl 0 --option narinfo-cache-positive-ttl 0 $go 2>/dev/null
  rm -rf "$store"; cat "$work/t"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# Interleaved, five each, median: the store writes of nix copy make single
# runs noisy.
for _ in 1 2 3 4 5; do copytime $NGINX >> "$work/copy-nginx"; copytime $LAYOUT >> "$work/copy-layout"; done
copy_nginx=$(median < "$work/copy-nginx"); copy_layout=$(median < "$work/copy-layout")

seq 64 | xargs -P64 -I{} curl -s -o /dev/null "$LAYOUT/$bignar" & dl=$!
wait $dl
peak=$(awk '/VmHWM/ {print $2}' /proc/$lpid/status) # peak RSS over the server's life

# Registry API: compose an image of the Go closure, then time manifest
# requests (warm) and compare its largest layer's download with nginx
# serving the same bytes as a static file.
gport=$(freeport)
"$NIXOCI" serve --listen "127.0.0.1:$gport" --from "oci:$work/layout" --registry --access-log=false >"$work/serve-$gport.log" 2>&1 & pids+=($!)
GREG=http://127.0.0.1:$gport
waitfor "$GREG/v2/"
compose_s=$( { /usr/bin/time -f %e curl -sf -o "$work/go-manifest.json" "$GREG/v2/go/manifests/latest"; } 2>&1 )
recompose_s=$( { /usr/bin/time -f %e curl -sf -o /dev/null "$GREG/v2/go/manifests/latest"; } 2>&1 )
manifest_load=$(echo /v2/go/manifests/latest | ./bin/httpload -c 32 -repeat 5000 "$GREG")
layer=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(max(m["layers"], key=lambda l: l["size"])["digest"])' "$work/go-manifest.json")
cp "$work/layout/blobs/sha256/${layer#sha256:}" "$work/cache/layer.blob"
layersize=$(stat -c %s "$work/cache/layer.blob")
blob_first=$(once "$GREG/v2/go/blobs/$layer")
blob_nginx=$(best3 "$NGINX/layer.blob"); blob_reg=$(best3 "$GREG/v2/go/blobs/$layer"); blob_gofs=$(best3 "$GOFS/layer.blob")

r() { echo "scale=2; $1 / $2" | bc; }
mbs() { echo "scale=0; $1 / 1000000" | bc; }
cat <<EOT
Narinfo closure: $npaths paths. NAR: $(mbs $bigsize) MB (zstd of a 1 GiB file). Copy: the Go closure (bench/go-closure.nix), zstd. $(nproc) cores shared by server and client.

| measurement | nginx (static \`nix copy\` dir) | nixoci serve, oci: layout | ratio | nixoci serve, registry |
|---|---|---|---|---|
| narinfo req/s, warm, wrk -c16 | $n_nginx | $n_layout | **$(r $n_layout $n_nginx)×** | $n_reg |
| narinfo, cold (each path once, -c16) | | $cold_layout | | $cold_reg |
| NAR download MB/s, first (hashed while sent) | | $(mbs ${nar_first%.*}) | $(r ${nar_first%.*} ${nar_nginx%.*})× | |
| NAR download MB/s (best of 3) | $(mbs ${nar_nginx%.*}) | $(mbs ${nar_layout%.*}) | **$(r ${nar_layout%.*} ${nar_nginx%.*})×** | $(mbs ${nar_reg%.*}) ($(r ${nar_reg%.*} ${nar_nginx%.*})×) |
| NAR download MB/s (best of 3), Go's \`http.FileServer\` on the same file (bench/fileserver) | | $(mbs ${nar_gofs%.*}) | $(r ${nar_gofs%.*} ${nar_nginx%.*})× | |
| \`nix copy --from http://\` of the Go closure, s (median of 5, interleaved) | $copy_nginx | $copy_layout | **$(r $copy_layout $copy_nginx)×** time | |
| peak RSS serving 64 concurrent downloads of the NAR | | **$((peak / 1024)) MiB** | | |

Registry API (\`serve --registry\`, image of the Go closure composed from the layout):

| measurement | figure |
|---|---|
| first composition (all layers converted), s | $compose_s |
| same name again, s | $recompose_s |
| manifest requests, already composed, -c32 | $manifest_load |
| largest layer ($(mbs $layersize) MB) download MB/s, best of 3: nginx static file vs \`/v2/…/blobs/\` | $(mbs ${blob_nginx%.*}) vs $(mbs ${blob_reg%.*}) (**$(r ${blob_reg%.*} ${blob_nginx%.*})×**) |
| the same layer from Go's \`http.FileServer\`, MB/s (best of 3) | $(mbs ${blob_gofs%.*}) ($(r ${blob_gofs%.*} ${blob_nginx%.*})×) |
| the same layer's first download from \`/v2/…/blobs/\` (hashed while sent), MB/s | $(mbs ${blob_first%.*}) ($(r ${blob_first%.*} ${blob_nginx%.*})×) |
EOT
