# Sourced by bench/serve.sh --narinfo-only, after nginx serves the nix copy
# directory and the layout holds the same paths: warm narinfo requests/s
# of nixoci serve with access logs on and off (this tree, and --before REV
# if given), interleaved with nginx, $rounds rounds; prints a Markdown
# table with medians and ratios. Logs go to a file, as under systemd with
# a log file or a pipe to a collector.
bins=(now); declare -A bin=([now]=$NIXOCI)
if [ -n "$before" ]; then
  rev=$(git rev-parse --short "$before")
  mkdir -p "$work/before-src"
  git archive "$before" | tar -x -C "$work/before-src"
  (cd "$work/before-src" && go build -o "$work/nixoci-before" ./cmd/nixoci)
  bins=(before now); bin[before]=$work/nixoci-before
fi
declare -A url logfile
configs=()
for b in "${bins[@]}"; do
  for log in true false; do
    c=$b/$log; configs+=("$c")
    port=$(freeport); logfile[$c]=$work/serve-$port.log
    "${bin[$b]}" serve --listen "127.0.0.1:$port" --from "oci:$work/layout" --access-log=$log >"${logfile[$c]}" 2>&1 & pids+=($!)
    url[$c]=http://127.0.0.1:$port
    waitfor "${url[$c]}/nix-cache-info"
    # Warm: every narinfo asked once, so wrk measures the cache.
    sed 's|^|/|; s|$|.narinfo|' "$work/hashes.txt" | ./bin/httpload -c 16 "${url[$c]}" >/dev/null
  done
done
for _ in $(seq "$rounds"); do
  wrkrate "$NGINX" >> "$work/rate-nginx"
  for c in "${configs[@]}"; do wrkrate "${url[$c]}" >> "$work/rate-${c//\//-}"; done
done
grep -q "non-200 responses: 0" "$work/wrk.log" && ! grep "non-200 responses: [1-9]" "$work/wrk.log" || { echo "wrk saw errors"; cat "$work/wrk.log"; exit 1; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
r() { echo "scale=2; $1 / $2" | bc; }
m_nginx=$(median < "$work/rate-nginx")
declare -A med
for c in "${configs[@]}"; do med[$c]=$(median < "$work/rate-${c//\//-}"); done
label() { local b=${1%/*} log=${1#*/} name; [ "$b" = before ] && name="before ($rev)" || name="this tree ($(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo +))"; echo "$name, access log $([ "$log" = true ] && echo on || echo off)"; }
echo "Warm narinfo, wrk -t2 -c16 -d10s, $npaths paths, $rounds rounds interleaved; $(nproc) cores shared by server and client."
echo
echo "| server | req/s by round | median | vs nginx | log cost |"
echo "|---|---|---|---|---|"
echo "| nginx (static \`nix copy\` dir) | $(paste -sd' ' "$work/rate-nginx") | $m_nginx | 1 | |"
for c in "${configs[@]}"; do
  cost=
  if [ "${c#*/}" = true ]; then
    off=${med[${c%/*}/false]}
    cost="$(echo "scale=1; 100 * ($off - ${med[$c]}) / $off" | bc)%"
  fi
  echo "| $(label "$c") | $(paste -sd' ' "$work/rate-${c//\//-}") | ${med[$c]} | $(r "${med[$c]}" "$m_nginx")× | $cost |"
done
echo
for c in "${configs[@]}"; do
  [ "${c#*/}" = true ] && echo "Access log lines written by $(label "$c"): $(wc -l < "${logfile[$c]}")"
done
