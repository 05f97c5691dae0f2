#!/usr/bin/env bash
# The binary-cache server's own work per warm narinfo request, in
# process (no network, no client): substituter's BenchmarkNarInfoWarm
# (access log off) and BenchmarkNarInfoWarmAccessLog (on, to a file), for
# this tree and for REV, interleaved, one core, N rounds; prints medians.
# Usage: bench/serve-handler.sh REV [N]   (e.g. REV=main; N default 8)
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: bench/serve-handler.sh REV [N]}; rounds=${2:-8}
work=$(mktemp -d /tmp/nixoci-bench-handler.XXXXXX)
trap 'rm -rf "$work"' EXIT
git archive "$rev" | tar -x -C "$work"
cp substituter/bench_test.go "$work/substituter/"
if [ -e "$work/internal/serving/accesslog.go" ]; then
  cp substituter/bench_accesslog_test.go "$work/substituter/"
else # before serving.AccessLog: the access log went through slog
  cat > "$work/substituter/bench_accesslog_test.go" <<'EOG'
package substituter_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/nixoci/nixoci/spec"
	"github.com/nixoci/nixoci/substituter"
)

func BenchmarkNarInfoWarmAccessLog(b *testing.B) {
	l := newLayout(b)
	p := newTestPath(b, "bench-1", "bench", spec.CompressionZstd)
	p.store(b, l)
	f, err := os.Create(filepath.Join(b.TempDir(), "access.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	s, _ := newServer(b, substituter.Options{Backends: backends(l), AccessLog: true, Logger: slog.New(slog.NewTextHandler(f, nil))})
	serveWarm(b, s, p)
}
EOG
fi
(cd "$work" && go test -c -o "$work/before.test" ./substituter)
go test -c -o "$work/now.test" ./substituter
for _ in $(seq "$rounds"); do
  for v in before now; do
    "$work/$v.test" -test.run '^$' -test.bench 'NarInfoWarm' -test.benchtime 1s -test.cpu 1 |
      awk -v v=$v '/^Benchmark/ {print v, $1, $3, $5, $7}' >> "$work/results"
  done
done
median() { sort -n | awk '{a[NR]=$1} END {n=NR; print (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2}'; }
echo "In-process warm narinfo, one core, $rounds rounds interleaved: ns per request (median), B and allocations per request."
echo
echo "| code | access log off, ns | access log on, ns | added by the log | allocs off / on |"
echo "|---|---|---|---|---|"
for v in before now; do
  off=$(awk -v v=$v '$1 == v && $2 == "BenchmarkNarInfoWarm" {print $3}' "$work/results" | median)
  on=$(awk -v v=$v '$1 == v && $2 == "BenchmarkNarInfoWarmAccessLog" {print $3}' "$work/results" | median)
  aoff=$(awk -v v=$v '$1 == v && $2 == "BenchmarkNarInfoWarm" {print $5; exit}' "$work/results")
  aon=$(awk -v v=$v '$1 == v && $2 == "BenchmarkNarInfoWarmAccessLog" {print $5; exit}' "$work/results")
  name=$([ $v = before ] && echo "$rev ($(git rev-parse --short "$rev"))" || echo "this tree ($(git rev-parse --short HEAD))")
  echo "| $name | $off | $on | $(echo "$on - $off" | bc) ns | $aoff / $aon |"
done
