#!/usr/bin/env bash
# Abuse benchmark, side by side in one run: a bystander's narinfo latency
# (one request every 10 ms for 10 s) while another client sends 40 PUTs
# with wrong passwords at once (bcrypt cost 12), against nixoci serve of
# REV and of this tree, interleaved, N rounds, each server fresh; also
# serve's CPU time over each run (utime+stime from /proc). Prints a
# Markdown table of medians. Usage: bench/abuse.sh REV [N]   (e.g.
# REV=main; N default 3; as root with Nix and htpasswd)
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: bench/abuse.sh REV [N]}; rounds=${2:-3}
export NIX_CONFIG="${NIX_CONFIG:-}"$'\nexperimental-features = nix-command\nbuild-users-group =\nsubstituters =\nsandbox = false'
work=$(mktemp -d /tmp/nixoci-bench-abuse.XXXXXX)
pid=
cleanup() { [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitfor() { for _ in $(seq 400); do curl -sf -o /dev/null "$1" && return; sleep 0.05; done; echo "not ready: $1" >&2; exit 1; }
cputicks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

mkdir -p "$work/before-src"
git archive "$rev" | tar -x -C "$work/before-src"
(cd "$work/before-src" && go build -o "$work/nixoci-before" ./cmd/nixoci)
go build -o "$work/nixoci-now" ./cmd/nixoci
go build -o "$work/abuseload" ./bench/abuseload
echo "bench/abuse.sh $(date -u +%FT%TZ)" > "$work/f"
path=$(nix-store --add "$work/f")
"$work/nixoci-now" push --to "oci:$work/layout" "$path" >/dev/null 2>&1
htpasswd -c -b -B -C 12 "$work/htpasswd" ci right-pw-19 2>/dev/null
hash=$(basename "$path" | cut -c1-32)
hz=$(getconf CLK_TCK)
for _ in $(seq "$rounds"); do
  for v in before now; do
    port=$(freeport)
    "$work/nixoci-$v" serve --listen "127.0.0.1:$port" --from "oci:$work/layout" --upload --credentials "$work/htpasswd" --access-log=false >"$work/serve-$v.log" 2>&1 &
    pid=$!
    waitfor "http://127.0.0.1:$port/nix-cache-info"
    t0=$(cputicks "$pid")
    line=$("$work/abuseload" -narinfo "http://127.0.0.1:$port/$hash.narinfo" -put "http://127.0.0.1:$port/nix-cache-info")
    t1=$(cputicks "$pid")
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
    echo "$v $line $(echo "scale=2; ($t1 - $t0) / $hz" | bc)" >> "$work/results"
  done
done
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
col() { awk -v v="$1" -v c="$2" '$1 == v {print $c}' "$work/results"; }
echo "Bystander narinfo latency while another client sends 40 wrong-password PUTs at once (bcrypt cost 12); $rounds rounds interleaved, medians; $(nproc) cores shared by server and clients."
echo
echo "| serve | p50 ms | p99 ms | max ms | bystander failures | burst answered in, s | wrong-password PUTs (status:count, last round) | serve CPU over the run, s |"
echo "|---|---|---|---|---|---|---|---|"
for v in before now; do
  name="before ($(git rev-parse --short "$rev"))"; [ "$v" = now ] && name="this tree ($(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo +))"
  echo "| $name | $(col $v 2 | median) | $(col $v 3 | median) | $(col $v 4 | median) | $(col $v 5 | median) | $(col $v 6 | median) | $(col $v 7 | tail -1) | $(col $v 8 | median) |"
done
