#!/usr/bin/env bash
# What the server limits cost a warm narinfo request, in process over a
# kept-alive loopback connection: internal/serving's
# BenchmarkLimitsNarinfo, a 1 KiB answer from a bare http.Server and from
# one within serving.Limits (bounded listener, paced responses and
# uploads), interleaved, N rounds, one core; prints medians of the CPU
# time per request (client and server; the client is the same in both),
# less disturbed than wall time by other work on a shared machine.
# Usage: bench/serve-limits.sh [N]   (N default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
work=$(mktemp -d /tmp/nixoci-bench-limits.XXXXXX)
trap 'rm -rf "$work"' EXIT
go test -c -o "$work/serving.test" ./internal/serving
for _ in $(seq "$rounds"); do
  for v in bare limits; do
    "$work/serving.test" -test.run '^$' -test.bench "BenchmarkLimitsNarinfo/$v\$" -test.benchtime 20000x -test.cpu 1 |
      awk -v v=$v '/^Benchmark/ {for (i = 1; i <= NF; i++) if ($(i+1) == "cpu-ns/op") print v, $i, $3}' >> "$work/results"
  done
done
median() { sort -n | awk '{a[NR]=$1} END {n=NR; print (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2}'; }
bare=$(awk '$1 == "bare" {print $2}' "$work/results" | median)
lim=$(awk '$1 == "limits" {print $2}' "$work/results" | median)
echo "Warm narinfo-sized request over loopback, in process, one core, $rounds rounds interleaved: CPU ns per request (client and server), medians."
echo
echo "| server | CPU ns/request by round | median | ratio |"
echo "|---|---|---|---|"
echo "| bare http.Server | $(awk '$1 == "bare" {printf "%d ", $2}' "$work/results") | $bare | 1 |"
echo "| within serving.Limits | $(awk '$1 == "limits" {printf "%d ", $2}' "$work/results") | $lim | $(echo "scale=3; $lim / $bare" | bc) |"
