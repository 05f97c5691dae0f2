package conformance

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/spec"
)

// metric reads one series (as the text format writes it, labels in
// order) from a running serve's /metrics.
func metric(t *testing.T, url, series string) float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// waitMetric polls serve's /metrics until series reaches want.
func waitMetric(t *testing.T, url, series string, want float64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for metric(t, url, series) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s stayed at %v, want %v", series, metric(t, url, series), want)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

const prefetchedOK = `nixoci_prefetched_narinfos_total{outcome="ok",via="closure"}`

// TestPrefetchBounded: when Nix asks for a closure's root, serve fetches
// the closure's narinfos ahead from docker-registry, with no more
// registry requests than the closure has paths plus a few; the real Nix
// then substitutes it with no further narinfo request reaching the
// registry. Over a closure of 10,000 paths, serve's memory stays bounded.
func TestPrefetchBounded(t *testing.T) {
	c := newSynthCache(t)
	root, n := c.tree("pfb", 15, 20)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	run(t, "push", "--from-cache", c.url(), "--to", reg.Ref("pf")+":c", root)
	proxy := testenv.StartFaultProxy(t, reg.Addr, testenv.FaultOptions{})
	srv := startServe(t, nil, "--from", proxy.Ref("pf"), "--blob-cache-size", "0")
	waitServeCatalog(t, srv)
	before := proxy.Requests()
	if code, body := httpGet(t, srv.URL+"/"+spec.PathTag(root)+".narinfo"); code != 200 {
		t.Fatalf("root narinfo: %d %s", code, body)
	}
	waitMetric(t, srv.URL, prefetchedOK, float64(n-1))
	used := proxy.Requests() - before
	// The root's manifest, then the closure index, whose entries describe
	// every path (SPEC.md 5.1).
	if used > 3 {
		t.Errorf("%d registry requests to learn a closure of %d paths, want at most 3", used, n)
	}
	t.Logf("closure of %d paths learned with %d registry requests", n, used)

	before = proxy.Requests()
	store := testenv.NewStoreDir(t)
	cmd := testenv.Cmd(t, "nix", "copy", "--from", srv.URL, "--to", store, "--no-check-sigs",
		"--option", "narinfo-cache-negative-ttl", "0", "--option", "narinfo-cache-positive-ttl", "0", root)
	if _, stderr, err := testenv.RunCmdErr(cmd); err != nil {
		t.Fatalf("nix copy through serve: %v\n%s", err, stderr)
	}
	for _, r := range proxy.Log()[before:] {
		if strings.Contains(r.Path, "/manifests/") {
			t.Errorf("after the prefetch Nix's requests still reached the registry: %s %s", r.Method, r.Path)
			break
		}
	}

	// 10,000 paths from a layout: peak memory of serve.
	big := newSynthCache(t)
	bigRoot, bigN := big.tree("pfbig", 100, 99)
	layout := "oci:" + t.TempDir() + "/l"
	run(t, "push", "--from-cache", big.url(), "--to", layout+":big", "--jobs", "8", bigRoot)
	bsrv := startServe(t, nil, "--from", layout, "--blob-cache-size", "0")
	httpGet(t, bsrv.URL+"/"+spec.PathTag(bigRoot)+".narinfo")
	waitMetric(t, bsrv.URL, prefetchedOK, float64(bigN-1))
	rss := peakRSS(t, bsrv)
	t.Logf("closure of %d paths prefetched from a layout; serve's peak RSS %d MiB", bigN, rss>>20)
	if rss > 300<<20 {
		t.Errorf("serve's peak RSS %d MiB after prefetching %d paths, want under 300 MiB", rss>>20, bigN)
	}
}

// waitServeCatalog waits until serve has read its backends' closures
// once (a lookup of a missing path is answered only after that).
func waitServeCatalog(t *testing.T, s *served) {
	t.Helper()
	if code, _ := httpGet(t, s.URL+"/00000000000000000000000000000000.narinfo"); code != 404 {
		t.Fatalf("a missing path: %d, want 404", code)
	}
}

// peakRSS is the peak resident set of a running serve (VmHWM).
func peakRSS(t *testing.T, s *served) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}
