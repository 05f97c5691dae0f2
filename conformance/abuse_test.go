package conformance

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gonar "github.com/nix-community/go-nix/pkg/nar"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"golang.org/x/crypto/bcrypt"

	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// The bounds TestServeUnderAbuse holds serve to, generous for a shared
// 2-core machine: what it asserts is that abuse does not take serve
// away from other clients (before the limits, 40 wrong-password PUTs
// alone raised a narinfo's latency from 1 ms to 378 ms).
const (
	abuseProbeP99    = time.Second      // narinfo latency of a bystander, 99th percentile
	abuseBigNAR      = 200 << 20        // the NAR downloaded at a normal pace
	abuseNormalPace  = "50M"            // curl --limit-rate of that download
	abuseCutWithin   = 15 * time.Second // a crawling reader is cut within this
	abuseWrongPUTs   = 40
	abuseSlowloris   = 150 // header-by-byte connections from one address
	abusePerClient   = 100 // --max-client-connections
	abuseBodyTimeout = 2 * time.Second
)

// TestServeUnderAbuse: serve, the real binary on loopback, facing at
// once slowloris connections (headers sent a byte at a time), clients
// reading a large NAR at a crawl and a burst of PUTs with wrong
// passwords (bcrypt cost 12), each attack from an address of its own,
// keeps answering a bystander's narinfo requests (p50/p99 reported,
// p99 under abuseProbeP99), lets a 200 MB NAR download at a normal pace
// (curl) complete intact and a right password upload; the slowloris
// connections past --max-client-connections are answered 503 with
// Retry-After and the rest closed at --header-timeout, the crawlers are
// cut, and the wrong passwords cost 10 bcrypt checks (the rest 429),
// with serve's CPU time for them bounded.
func TestServeUnderAbuse(t *testing.T) {
	curl := testenv.Tool(t, "curl")
	htpasswd := testenv.Tool(t, "htpasswd")
	c := newSynthCache(t)
	small := synthStorePath("abuse-small")
	c.add(small, fileNAR(t, small), nil, nil)
	big, bigInfo := addBigPath(t, c, "abuse-big", abuseBigNAR)
	layoutDir := filepath.Join(t.TempDir(), "l")
	run(t, "push", "--from-cache", c.url(), "--to", "oci:"+layoutDir+":abuse", small, big)
	creds := filepath.Join(t.TempDir(), "htpasswd")
	cmd := testenv.Cmd(t, htpasswd, "-c", "-i", "-B", "-C", "12", creds, "ci")
	cmd.Stdin = strings.NewReader("right-pw-19")
	testenv.RunCmd(t, cmd)

	srv := startServe(t, nil, "--from", "oci:"+layoutDir, "--upload", "--credentials", creds,
		"--blob-cache-size", "0", "--header-timeout", "3s", "--body-timeout", abuseBodyTimeout.String(),
		"--min-body-rate", "256KiB", "--max-client-connections", strconv.Itoa(abusePerClient))
	host := strings.TrimPrefix(srv.URL, "http://")
	narinfoURL := srv.URL + "/" + spec.PathTag(small) + ".narinfo"
	bigNARURL := srv.URL + "/" + bigInfo.URL

	// The bystander: one narinfo request every 20 ms from 127.0.0.1.
	probeCtx, stopProbe := context.WithCancel(context.Background())
	probeDone := make(chan []time.Duration)
	var probeErrs []string
	go func() {
		client := &http.Client{Timeout: 10 * time.Second}
		var lat []time.Duration
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-probeCtx.Done():
				probeDone <- lat
				return
			case <-tick.C:
			}
			start := time.Now()
			resp, err := client.Get(narinfoURL)
			if err != nil {
				probeErrs = append(probeErrs, err.Error())
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			lat = append(lat, time.Since(start))
			if resp.StatusCode != 200 {
				probeErrs = append(probeErrs, resp.Status)
			}
		}
	}()

	var wg sync.WaitGroup
	// Slowloris from 127.0.0.2.
	loris := make([]slowlorisResult, abuseSlowloris)
	for i := range loris {
		wg.Go(func() { loris[i] = slowloris(t, host, "127.0.0.2") })
	}
	// Crawling NAR readers from 127.0.0.3.
	crawlers := make([]crawlResult, 10)
	for i := range crawlers {
		wg.Go(func() { crawlers[i] = crawlNAR(host, "127.0.0.3", "/"+bigInfo.URL) })
	}
	// The large NAR at a normal pace, from 127.0.0.1.
	var curlErr error
	var curlTook time.Duration
	bigFile := filepath.Join(t.TempDir(), "big.nar")
	wg.Go(func() {
		start := time.Now()
		_, stderr, err := testenv.RunCmdErr(testenv.Cmd(t, curl, "-sSf", "--limit-rate", abuseNormalPace, "-o", bigFile, bigNARURL))
		curlTook = time.Since(start)
		if err != nil {
			curlErr = fmt.Errorf("%v: %s", err, stderr)
		}
	})

	// The wrong passwords from 127.0.0.4, all at once.
	cpuBefore := processCPU(t, srv.cmd.Process.Pid)
	statuses := make([]int, abuseWrongPUTs)
	retryAfter := make([]string, abuseWrongPUTs)
	var burst sync.WaitGroup
	burstStart := time.Now()
	wrongClient := clientFrom("127.0.0.4")
	for i := range statuses {
		burst.Go(func() {
			req, _ := http.NewRequest(http.MethodPut, srv.URL+"/nix-cache-info", strings.NewReader("StoreDir: /nix/store\n"))
			req.SetBasicAuth("ci", "guess-"+strconv.Itoa(i))
			resp, err := wrongClient.Do(req)
			if err != nil {
				t.Errorf("wrong-password PUT %d: %v", i, err)
				return
			}
			resp.Body.Close()
			statuses[i], retryAfter[i] = resp.StatusCode, resp.Header.Get("Retry-After")
		})
	}
	burst.Wait()
	burstTook := time.Since(burstStart)
	cpuBurst := processCPU(t, srv.cmd.Process.Pid) - cpuBefore
	// Meanwhile the right password passes.
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/nix-cache-info", strings.NewReader("StoreDir: /nix/store\n"))
	req.SetBasicAuth("ci", "right-pw-19")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Errorf("PUT with the right password during the burst: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	wg.Wait()
	stopProbe()
	lat := <-probeDone

	// The bystander was answered throughout.
	if len(probeErrs) > 0 {
		t.Errorf("%d of the bystander's narinfo requests failed, e.g. %s", len(probeErrs), probeErrs[0])
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	if len(lat) < 50 {
		t.Fatalf("only %d bystander requests answered", len(lat))
	}
	t.Logf("bystander narinfo latency under abuse: %d requests, p50 %v, p99 %v, max %v",
		len(lat), pct(0.5).Round(time.Microsecond), pct(0.99).Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
	if p99 := pct(0.99); p99 > abuseProbeP99 {
		t.Errorf("bystander narinfo p99 %v under abuse, want under %v", p99, abuseProbeP99)
	}

	// Slowloris: past the bound per client, 503 with Retry-After at
	// once; the others closed at the header timeout.
	var refused, closed int
	var longest time.Duration
	for _, r := range loris {
		switch {
		case r.err != nil:
			t.Errorf("slowloris connection: %v", r.err)
		case r.status == http.StatusServiceUnavailable && r.retryAfter != "":
			refused++
		case r.status == 0 || r.status == http.StatusRequestTimeout || r.status == http.StatusBadRequest: // net/http answers a cut request 400
			closed++
			longest = max(longest, r.held)
		default:
			t.Errorf("slowloris connection answered %d (Retry-After %q)", r.status, r.retryAfter)
		}
	}
	t.Logf("slowloris: %d connections refused 503 + Retry-After, %d closed by serve, held at most %v", refused, closed, longest.Round(time.Millisecond))
	if refused != abuseSlowloris-abusePerClient || closed != abusePerClient {
		t.Errorf("slowloris: %d refused, %d closed; want %d and %d", refused, closed, abuseSlowloris-abusePerClient, abusePerClient)
	}
	if longest > 3*time.Second+2*time.Second {
		t.Errorf("a slowloris connection was held %v, past --header-timeout 3s", longest)
	}

	// Crawlers cut, the normal-pace download whole.
	for i, r := range crawlers {
		if r.read >= int64(bigInfo.FileSize) || r.took > abuseCutWithin {
			t.Errorf("crawler %d: read %d of %d bytes in %v (%v); want it cut within %v", i, r.read, bigInfo.FileSize, r.took, r.err, abuseCutWithin)
		}
	}
	t.Logf("crawlers (reading 2 KiB/s) cut after %v to %v", slices.MinFunc(crawlers, byTook).took.Round(time.Millisecond), slices.MaxFunc(crawlers, byTook).took.Round(time.Millisecond))
	if curlErr != nil {
		t.Errorf("curl of the %d MB NAR at %s/s: %v", abuseBigNAR>>20, abuseNormalPace, curlErr)
	} else if got := fileSHA256(t, bigFile); got != bigInfo.FileHash {
		t.Errorf("the NAR downloaded at a normal pace hashes to %s, want %s", got, bigInfo.FileHash)
	}
	t.Logf("%d MB NAR at a normal pace (curl --limit-rate %s): %v", abuseBigNAR>>20, abuseNormalPace, curlTook.Round(time.Millisecond))

	// Wrong passwords: ten checked, the rest refused at once.
	counts := map[int]int{}
	for i, s := range statuses {
		counts[s]++
		if s == http.StatusTooManyRequests && retryAfter[i] == "" {
			t.Errorf("429 without Retry-After")
		}
	}
	checks := metricValue(t, srv.URL, "nixoci_password_checks_total")
	cost := bcryptCompareTime(t, creds)
	t.Logf("%d wrong-password PUTs in %v: %v (status: count); %v bcrypt checks; serve's CPU %v (one check at cost 12 takes %v here)",
		abuseWrongPUTs, burstTook.Round(time.Millisecond), counts, checks, cpuBurst, cost.Round(time.Millisecond))
	if counts[http.StatusUnauthorized] < 10 || counts[http.StatusUnauthorized] > 11 || counts[http.StatusTooManyRequests] != abuseWrongPUTs-counts[http.StatusUnauthorized] {
		t.Errorf("wrong-password PUTs answered %v, want 10 (or 11) 401 and the rest 429", counts)
	}
	if checks < 10 || checks > 12 { // the burst's, and the right password's
		t.Errorf("%v bcrypt checks, want 11", checks)
	}
	if cpuBurst > time.Duration(abuseWrongPUTs/2)*cost {
		t.Errorf("serve used %v of CPU for %d wrong passwords, as much as %d checks of %v", cpuBurst, abuseWrongPUTs, abuseWrongPUTs/2, cost)
	}
	for _, want := range []string{
		`nixoci_connections_refused_total{reason="client_connections"}`,
		`nixoci_slow_bodies_cut_total{direction="response"}`,
	} {
		if v := metricValue(t, srv.URL, want); v < 1 {
			t.Errorf("%s = %v", want, v)
		}
	}
}

// TestServeConnectionBound: past --max-connections, a connection is
// answered 503 with Retry-After before its request is read; a place
// freed is taken again.
func TestServeConnectionBound(t *testing.T) {
	layoutDir := filepath.Join(t.TempDir(), "l")
	c := newSynthCache(t)
	p := synthStorePath("bound-1")
	c.add(p, fileNAR(t, p), nil, nil)
	run(t, "push", "--from-cache", c.url(), "--to", "oci:"+layoutDir+":bound", p)
	srv := startServe(t, nil, "--from", "oci:"+layoutDir, "--max-connections", "3")
	host := strings.TrimPrefix(srv.URL, "http://")
	var held []net.Conn
	for range 2 { // startServe's readiness probe may still hold one
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
		if status, _ := rawGet(c, "/nix-cache-info"); status != 200 {
			t.Fatalf("within the bound: %d", status)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		status, retryAfter := rawGet(c, "/nix-cache-info")
		if status == http.StatusServiceUnavailable {
			if retryAfter != "1" {
				t.Errorf("503 past the bound with Retry-After %q, want 1", retryAfter)
			}
			c.Close()
			break
		}
		held = append(held, c) // the third place; the next is past the bound
		if time.Now().After(deadline) {
			t.Fatalf("no 503 with %d connections open and --max-connections 3", len(held))
		}
	}
	held[0].Close()
	for {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		status, _ := rawGet(c, "/nix-cache-info")
		c.Close()
		if status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed connection's place was not freed")
		}
		time.Sleep(50 * time.Millisecond) // polling for serve to see the close
	}
	for _, c := range held {
		c.Close()
	}
	for {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		status, body := rawGetBody(c, "/metrics")
		c.Close()
		if status == 200 {
			if !regexp.MustCompile(`(?m)^nixoci_connections_refused_total\{reason="max_connections"\} [1-9]`).MatchString(body) {
				t.Errorf("the refused connection is not counted:\n%s", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no place freed for /metrics")
		}
		time.Sleep(50 * time.Millisecond) // polling for serve to see the closes
	}
}

// addBigPath adds a store path holding one file of size bytes to c,
// writing its NAR as it goes, and returns it and its narinfo.
func addBigPath(t *testing.T, c *synthCache, name string, size int) (string, *narinfo.NarInfo) {
	t.Helper()
	p := synthStorePath(name)
	tmp := filepath.Join(c.dir, "nar", "big.tmp")
	f, err := os.Create(tmp)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	w, err := gonar.NewWriter(bw)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteHeader(&gonar.Header{Path: "/", Type: gonar.TypeRegular, Size: int64(size)}); err != nil {
		t.Fatal(err)
	}
	block := testenv.SampleData(1<<20, 19)
	for n := 0; n < size; n += len(block) {
		if _, err := w.Write(block[:min(len(block), size-n)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	f.Close()
	hash := "sha256:" + nixbase32.EncodeToString(h.Sum(nil))
	info := &narinfo.NarInfo{
		StorePath: p, URL: "nar/" + strings.TrimPrefix(hash, "sha256:") + ".nar", Compression: "none",
		FileHash: hash, FileSize: uint64(st.Size()), NarHash: hash, NarSize: uint64(st.Size()),
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, info.URL)); err != nil {
		t.Fatal(err)
	}
	text, err := info.Format()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, spec.PathTag(p)+".narinfo"), text, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, info
}

type slowlorisResult struct {
	status     int    // 0: closed without an answer
	retryAfter string // of a 503
	held       time.Duration
	err        error
}

// slowloris connects from local and sends a request's headers a byte
// every 200 ms, never ending them, until serve answers or closes.
func slowloris(t *testing.T, host, local string) slowlorisResult {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("tcp", host)
	if err != nil {
		return slowlorisResult{err: err}
	}
	defer c.Close()
	start := time.Now()
	answered := make(chan slowlorisResult, 1)
	go func() {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			answered <- slowlorisResult{held: time.Since(start)} // closed
			return
		}
		resp.Body.Close()
		answered <- slowlorisResult{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), held: time.Since(start)}
	}()
	header := "GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 200)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case r := <-answered:
			return r
		case <-tick.C:
		}
		if i < len(header) {
			c.Write([]byte{header[i]}) // an error shows up as the read ending
		}
	}
}

type crawlResult struct {
	read int64
	took time.Duration
	err  error
}

func byTook(a, b crawlResult) int { return int(a.took - b.took) }

// crawlNAR asks for path from local with a small receive buffer and
// reads the answer at 2 KiB/s until serve cuts it (or it ends).
func crawlNAR(host, local, path string) crawlResult {
	d := net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)},
		Control: func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		},
	}
	start := time.Now()
	c, err := d.Dial("tcp", host)
	if err != nil {
		return crawlResult{err: err}
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
	buf := make([]byte, 256)
	var n int64
	tick := time.NewTicker(125 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		c.SetReadDeadline(time.Now().Add(abuseCutWithin))
		m, err := io.ReadFull(c, buf)
		n += int64(m)
		if err != nil || time.Since(start) > 2*abuseCutWithin {
			return crawlResult{read: n, took: time.Since(start), err: err}
		}
	}
	panic("unreachable")
}

// clientFrom is an HTTP client whose connections come from local.
func clientFrom(local string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, MaxConnsPerHost: 0}, Timeout: 60 * time.Second}
}

// rawGet sends GET path on c and returns the status and Retry-After.
func rawGet(c net.Conn, path string) (int, string) {
	resp, _ := rawGetResponse(c, path)
	if resp == nil {
		return 0, ""
	}
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// rawGetBody sends GET path on c and returns the status and body.
func rawGetBody(c net.Conn, path string) (int, string) {
	resp, body := rawGetResponse(c, path)
	if resp == nil {
		return 0, ""
	}
	return resp.StatusCode, body
}

func rawGetResponse(c net.Conn, path string) (*http.Response, string) {
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, ""
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

// processCPU is the user and system CPU time pid has used.
func processCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which ends at the last ')':
	// state is field 3, utime 14, stime 15 (clock ticks, 100 a second).
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// metricValue reads one sample of serve's /metrics (name with labels, as
// printed), 0 if absent.
func metricValue(t *testing.T, base, name string) float64 {
	t.Helper()
	_, body := httpGet(t, base+"/metrics")
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// bcryptCompareTime is the time of one bcrypt check of the hash in an
// htpasswd file on this machine.
func bcryptCompareTime(t *testing.T, file string) time.Duration {
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	_, hash, _ := strings.Cut(strings.TrimSpace(string(data)), ":")
	start := time.Now()
	bcrypt.CompareHashAndPassword([]byte(hash), []byte("x"))
	return time.Since(start)
}

// fileSHA256 is a file's sha256 as a narinfo writes it.
func fileSHA256(t *testing.T, file string) string {
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return "sha256:" + nixbase32.EncodeToString(h.Sum(nil))
}
