package conformance

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// longRun reports whether the long settings of reliability tests were
// asked for (NIXOCI_RELIABILITY_LONG=1); CI runs the short ones.
func longRun() bool { return os.Getenv("NIXOCI_RELIABILITY_LONG") == "1" }

// TestServeLoad: 200 concurrent clients for a bounded time (10 s, or 60 s
// with NIXOCI_RELIABILITY_LONG=1) mixing narinfo GETs, HEADs, NAR
// downloads and lookups of absent paths against `nixoci serve` over a
// healthy layout: every answer must be right (narinfo as first served,
// NAR bytes hashing to their FileHash, absent paths 404), no 5xx, RSS
// bounded. Reports requests, p50/p99 latency and peak RSS.
func TestServeLoad(t *testing.T) {
	clients, duration := 200, 10*time.Second
	if longRun() {
		duration = 60 * time.Second
	}
	c := newSynthCache(t)
	root, n := c.tree("load", 10, 30)
	fx := testenv.BuildFixture(t, "load")
	layoutDir := filepath.Join(t.TempDir(), "l")
	run(t, "push", "--from-cache", c.url(), "--to", "oci:"+layoutDir+":synth", root)
	run(t, "push", "--to", "oci:"+layoutDir+":fx", fx.App) // a 2 MB NAR among small ones
	srv := startServe(t, nil, "--from", "oci:"+layoutDir, "--access-log=false")

	// Expected answers, from one request each before the load.
	type expect struct{ narinfo, narURL, fileHash string }
	var paths []expect
	hashes := append(strings.Fields(testenv.Run(t, "sh", "-c", "ls "+c.dir+" | sed -n 's/.narinfo$//p'")), spec.PathTag(fx.Busybox))
	for _, h := range hashes {
		code, body := httpGet(t, srv.URL+"/"+h+".narinfo")
		if code != 200 {
			t.Fatalf("narinfo %s: %d", h, code)
		}
		info, err := narinfo.Parse(strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, expect{body, info.URL, strings.TrimPrefix(info.FileHash, "sha256:")})
	}
	if len(paths) != n+1 {
		t.Fatalf("%d narinfos, want %d", len(paths), n+1)
	}

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}}
	var (
		mu        sync.Mutex
		latencies []time.Duration
		wrong     atomic.Int64
		fivexx    atomic.Int64
		requests  atomic.Int64
		failures  []string
	)
	fail := func(format string, args ...any) {
		wrong.Add(1)
		mu.Lock()
		if len(failures) < 10 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
		mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	peakRSS := int64(0)
	go func() { // sample the server's peak RSS while the load runs
		for ctx.Err() == nil {
			if v := vmHWM(srv.cmd.Process.Pid); v > atomic.LoadInt64(&peakRSS) {
				atomic.StoreInt64(&peakRSS, v)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewSource(int64(i)))
			var local []time.Duration
			for ctx.Err() == nil {
				p := paths[rnd.Intn(len(paths))]
				kind := rnd.Intn(10)
				var method, url string
				switch {
				case kind < 5:
					method, url = "GET", srv.URL+"/"+spec.PathTag(narinfoStorePath(p.narinfo))+".narinfo"
				case kind < 7:
					method, url = "HEAD", srv.URL+"/"+spec.PathTag(narinfoStorePath(p.narinfo))+".narinfo"
				case kind < 9:
					method, url = "GET", srv.URL+"/"+p.narURL
				default:
					method, url = "GET", srv.URL+"/"+synthHash(rnd.Int63())+".narinfo"
				}
				req, _ := http.NewRequestWithContext(ctx, method, url, nil)
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						fail("%s %s: %v", method, url, err)
					}
					continue
				}
				h := sha256.New()
				body, err := io.ReadAll(io.TeeReader(resp.Body, h))
				resp.Body.Close()
				if ctx.Err() != nil {
					break // cut off by the deadline, not wrong
				}
				local = append(local, time.Since(start))
				requests.Add(1)
				if resp.StatusCode >= 500 {
					fivexx.Add(1)
				}
				switch {
				case err != nil:
					fail("%s %s: reading: %v", method, url, err)
				case kind < 5 && (resp.StatusCode != 200 || string(body) != p.narinfo):
					fail("GET narinfo: %d, body differs: %v", resp.StatusCode, string(body) != p.narinfo)
				case kind >= 5 && kind < 7 && (resp.StatusCode != 200 || len(body) != 0):
					fail("HEAD narinfo: %d with %d body bytes", resp.StatusCode, len(body))
				case kind >= 7 && kind < 9 && (resp.StatusCode != 200 || nixbase32.EncodeToString(h.Sum(nil)) != p.fileHash):
					fail("GET %s: %d, content hash differs", p.narURL, resp.StatusCode)
				case kind == 9 && resp.StatusCode != 404:
					fail("GET absent narinfo: %d, want 404", resp.StatusCode)
				}
			}
			mu.Lock()
			latencies = append(latencies, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	if len(latencies) == 0 {
		t.Fatal("no requests completed")
	}
	pct := func(q float64) time.Duration { return latencies[int(q*float64(len(latencies)-1))] }
	peak := max(atomic.LoadInt64(&peakRSS), vmHWM(srv.cmd.Process.Pid))
	t.Logf("%d clients for %v: %d requests (%.0f/s), %d wrong, %d 5xx, p50 %v, p99 %v, peak RSS %d MiB",
		clients, duration, requests.Load(), float64(requests.Load())/duration.Seconds(), wrong.Load(), fivexx.Load(),
		pct(0.5).Round(time.Microsecond), pct(0.99).Round(time.Microsecond), peak/1024)
	if wrong.Load() > 0 || fivexx.Load() > 0 {
		t.Errorf("%d wrong answers, %d 5xx; first failures:\n%s", wrong.Load(), fivexx.Load(), strings.Join(failures, "\n"))
	}
	if peak > 200*1024 {
		t.Errorf("peak RSS %d MiB, want under 200 MiB", peak/1024)
	}
}

// narinfoStorePath returns the StorePath line of a narinfo text.
func narinfoStorePath(text string) string {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "StorePath: "); ok {
			return p
		}
	}
	return ""
}

// synthHash is a valid hash part no path has.
func synthHash(n int64) string {
	sum := sha256.Sum256([]byte("absent-" + strconv.FormatInt(n, 10)))
	return nixbase32.EncodeToString(sum[:20])
}

// vmHWM is a process's peak resident set size in KiB (0 if unknown).
func vmHWM(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb
		}
	}
	return 0
}
