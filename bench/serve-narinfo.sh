# Sourced by bench/serve.sh --narinfo-only, after nginx serves the nix copy
# directory and the layout holds the same paths: warm narinfo requests/s
# of nixoci serve with access logs on and off (this tree, and --before REV
# if given), interleaved with nginx, $rounds rounds; prints a Markdown
# table with medians and ratios. Logs go to a file, as under systemd with
# a log file or a pipe to a collector.
#
# Other work on the machine moves throughput by tens of percent from one
# run to the next, so besides req/s the table gives, per configuration,
# the server's own CPU time per request (utime+stime from /proc over each
# run, divided by the requests wrk counted): what logging costs the
# server, much less disturbed by load elsewhere.
bins=(now); declare -A bin=([now]=$NIXOCI)
if [ -n "$before" ]; then
  rev=$(git rev-parse --short "$before")
  mkdir -p "$work/before-src"
  git archive "$before" | tar -x -C "$work/before-src"
  (cd "$work/before-src" && go build -o "$work/nixoci-before" ./cmd/nixoci)
  bins=(before now); bin[before]=$work/nixoci-before
fi
declare -A url logfile pid
configs=()
for b in "${bins[@]}"; do
  for log in true false; do
    c=$b/$log; configs+=("$c")
    port=$(freeport); logfile[$c]=$work/serve-$port.log
    "${bin[$b]}" serve --listen "127.0.0.1:$port" --from "oci:$work/layout" --access-log=$log >"${logfile[$c]}" 2>&1 & pids+=($!)
    pid[$c]=$!
    url[$c]=http://127.0.0.1:$port
    waitfor "${url[$c]}/nix-cache-info"
    # Warm: every narinfo asked once, so wrk measures the cache.
    sed 's|^|/|; s|$|.narinfo|' "$work/hashes.txt" | ./bin/httpload -c 16 "${url[$c]}" >/dev/null
  done
done
cputicks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
# measure CONFIG: one wrk run; appends req/s to rate-CONFIG and the
# server's CPU µs per request to cpu-CONFIG.
measure() {
  local c=$1 f=${1//\//-} t0 t1 out
  t0=$(cputicks "${pid[$c]}")
  out=$(HASHES="$work/hashes.txt" wrk -t2 -c16 -d10s -s bench/narinfo.lua "${url[$c]}" | tee -a "$work/wrk.log")
  t1=$(cputicks "${pid[$c]}")
  awk '/Requests\/sec/ {print int($2)}' <<<"$out" >> "$work/rate-$f"
  awk -v ticks=$((t1 - t0)) -v hz="$hz" '/requests in/ {printf "%.2f\n", ticks / hz * 1e6 / $1}' <<<"$out" >> "$work/cpu-$f"
}
for _ in $(seq "$rounds"); do
  wrkrate "$NGINX" >> "$work/rate-nginx"
  for c in "${configs[@]}"; do measure "$c"; done
done
grep -q "non-200 responses: 0" "$work/wrk.log" && ! grep "non-200 responses: [1-9]" "$work/wrk.log" || { echo "wrk saw errors"; cat "$work/wrk.log"; exit 1; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
r() { echo "scale=2; $1 / $2" | bc; }
m_nginx=$(median < "$work/rate-nginx")
declare -A med cpu
for c in "${configs[@]}"; do
  med[$c]=$(median < "$work/rate-${c//\//-}")
  cpu[$c]=$(median < "$work/cpu-${c//\//-}")
done
label() { local b=${1%/*} log=${1#*/} name; [ "$b" = before ] && name="before ($rev)" || name="this tree ($(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo +))"; echo "$name, access log $([ "$log" = true ] && echo on || echo off)"; }
echo "Warm narinfo, wrk -t2 -c16 -d10s, $npaths paths, $rounds rounds interleaved; $(nproc) cores shared by server and client."
echo
echo "| server | req/s by round | median req/s | vs nginx | throughput lost to the log | server CPU µs/request by round | median | CPU added by the log |"
echo "|---|---|---|---|---|---|---|---|"
echo "| nginx (static \`nix copy\` dir) | $(paste -sd' ' "$work/rate-nginx") | $m_nginx | 1 | | | | |"
for c in "${configs[@]}"; do
  cost=; cpucost=
  if [ "${c#*/}" = true ]; then
    off=${med[${c%/*}/false]}; cpuoff=${cpu[${c%/*}/false]}
    cost="$(echo "scale=1; 100 * ($off - ${med[$c]}) / $off" | bc)%"
    cpucost="$(echo "scale=1; 100 * (${cpu[$c]} - $cpuoff) / $cpuoff" | bc)%"
  fi
  f=${c//\//-}
  echo "| $(label "$c") | $(paste -sd' ' "$work/rate-$f") | ${med[$c]} | $(r "${med[$c]}" "$m_nginx")× | $cost | $(paste -sd' ' "$work/cpu-$f") | ${cpu[$c]} | $cpucost |"
done
echo
for c in "${configs[@]}"; do
  [ "${c#*/}" = true ] && echo "Access log lines written by $(label "$c"): $(wc -l < "${logfile[$c]}")"
done
