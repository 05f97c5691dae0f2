package serving

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// limitServer serves h within l on a loopback listener and returns its
// address and metrics.
func limitServer(t *testing.T, l Limits, h http.Handler) (string, *Metrics) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	hs := l.Server(h, m, log)
	go hs.Serve(l.Listener(ln, m, log))
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String(), m
}

// dialSmall connects to addr with a small receive buffer, so that a
// client that does not read stops the server's writes early.
func dialSmall(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// crawl reads c at about rate bytes per second until it ends or limit
// passes, and returns what it read and how long that took.
func crawl(c net.Conn, rate int, limit time.Duration) (int, time.Duration, error) {
	start := time.Now()
	buf := make([]byte, rate/20)
	total := 0
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		if time.Since(start) > limit {
			return total, time.Since(start), errors.New("still open")
		}
		c.SetReadDeadline(time.Now().Add(limit))
		n, err := io.ReadFull(c, buf)
		total += n
		if err != nil {
			return total, time.Since(start), err
		}
	}
	panic("unreachable")
}

// bigFile writes size bytes to a file and returns its path.
func bigFile(t *testing.T, size int) (string, []byte) {
	data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	f := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(f, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return f, data
}

// TestSlowReaderCut: a client reading a response at a crawl is cut once
// it falls the body timeout behind the minimum rate, whether the body is
// sent from a file (sendfile) or written; a client reading at a normal
// pace gets every byte; both counted in the metrics.
func TestSlowReaderCut(t *testing.T) {
	file, data := bigFile(t, 16<<20)
	l := Limits{MinBodyRate: 256 << 10, BodyTimeout: 300 * time.Millisecond}
	addr, m := limitServer(t, l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/file" {
			http.ServeFile(w, r, file)
			return
		}
		w.Header().Set("Content-Length", "16777216")
		for i := 0; i < len(data); i += 32 << 10 {
			if _, err := w.Write(data[i : i+32<<10]); err != nil {
				return
			}
		}
	}))
	for i, path := range []string{"/file", "/written"} {
		c := dialSmall(t, addr)
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		n, took, err := crawl(c, 4000, 20*time.Second)
		if err == nil || err.Error() == "still open" {
			t.Fatalf("GET %s read at 4000 bytes/s: %d bytes in %v, not cut (%v)", path, n, took, err)
		}
		// Cut within the timeout and a chunk's allowance, after what the
		// socket buffers held.
		if took > 5*time.Second {
			t.Errorf("GET %s read at 4000 bytes/s cut after %v", path, took)
		}
		t.Logf("GET %s read at 4000 bytes/s: cut after %d bytes, %v: %v", path, n, took.Round(time.Millisecond), err)
		if got := counterValue(m.bodiesCut.WithLabelValues("response")); got != float64(i+1) {
			t.Errorf("after GET %s: %v response bodies counted cut, want %d", path, got, i+1)
		}
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("GET %s at full speed: %d of %d bytes, %v", path, len(got), len(data), err)
		}
	}
}

// TestSlowBackendNotCut: time spent waiting on the handler (a backend)
// is not counted against the client, however long.
func TestSlowBackendNotCut(t *testing.T) {
	addr, m := limitServer(t, Limits{MinBodyRate: 1 << 20, BodyTimeout: 100 * time.Millisecond}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for range 3 {
			w.Write(bytes.Repeat([]byte("x"), 1000))
			w.(http.Flusher).Flush()
			time.Sleep(300 * time.Millisecond) // a backend slower than the window
		}
	}))
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || len(got) != 3000 {
		t.Errorf("response from a slow backend: %d bytes, %v", len(got), err)
	}
	if n := counterValue(m.bodiesCut.WithLabelValues("response")); n != 0 {
		t.Errorf("%v bodies cut", n)
	}
}

// TestSlowUploadCut: a request body sent at a crawl ends in ErrSlowClient
// for the handler; one sent at a normal pace arrives whole; the
// connection's next request is not cut by a deadline left behind.
func TestSlowUploadCut(t *testing.T) {
	got := make(chan error, 1)
	addr, m := limitServer(t, Limits{MinBodyRate: 64 << 10, BodyTimeout: 300 * time.Millisecond}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/crawl" {
			got <- err
			return
		}
		if err != nil || n != 1<<20 {
			http.Error(w, "short body", http.StatusBadRequest)
		}
	}))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "PUT /crawl HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
	start := time.Now()
	go func() {
		for range 100 {
			if _, err := c.Write(make([]byte, 100)); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond) // 2000 bytes/s
		}
	}()
	select {
	case err := <-got:
		if !errors.Is(err, ErrSlowClient) {
			t.Errorf("crawling upload read: %v, want ErrSlowClient", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("crawling upload cut after %v", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("crawling upload not cut in 10s")
	}
	if n := counterValue(m.bodiesCut.WithLabelValues("request")); n != 1 {
		t.Errorf("%v request bodies counted cut, want 1", n)
	}

	// A normal upload, then an idle pause longer than the body timeout,
	// then another request on the same connection.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	br := bufio.NewReader(c2)
	for i := range 2 {
		req, _ := http.NewRequest(http.MethodPut, "http://"+addr+"/normal", bytes.NewReader(make([]byte, 1<<20)))
		if err := req.Write(c2); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatalf("request %d on a kept-alive connection: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("normal upload %d: %s", i, resp.Status)
		}
		time.Sleep(600 * time.Millisecond) // idle, within IdleTimeout, past BodyTimeout
	}
}

// TestConnectionLimits: past MaxConnections, and past
// MaxClientConnections from one address, a connection is answered 503
// with Retry-After; a closed connection frees its place; another
// address is not held back by one at its bound.
func TestConnectionLimits(t *testing.T) {
	addr, m := limitServer(t, Limits{MaxConnections: 3, MaxClientConnections: 2}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	from := func(local string) (net.Conn, *bufio.Reader) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	get := func(c net.Conn, br *bufio.Reader) *http.Response {
		t.Helper()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	wantBusy := func(what string, resp *http.Response) {
		t.Helper()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
			t.Errorf("%s: %s Retry-After %q, want 503 with Retry-After 1", what, resp.Status, resp.Header.Get("Retry-After"))
		}
	}
	a1, r1 := from("127.0.0.1")
	a2, r2 := from("127.0.0.1")
	for _, c := range []struct {
		c net.Conn
		r *bufio.Reader
	}{{a1, r1}, {a2, r2}} {
		if resp := get(c.c, c.r); resp.StatusCode != 200 {
			t.Fatalf("within the bounds: %s", resp.Status)
		}
	}
	wantBusy("a third connection from one address", get(from("127.0.0.1")))
	b1, rb1 := from("127.0.0.2")
	if resp := get(b1, rb1); resp.StatusCode != 200 {
		t.Errorf("another address, within the bounds: %s", resp.Status)
	}
	wantBusy("a fourth connection in all", get(from("127.0.0.3")))
	if got := counterValue(m.connsRefused.WithLabelValues("client_connections")); got != 1 {
		t.Errorf("%v refused per client, want 1", got)
	}
	if got := counterValue(m.connsRefused.WithLabelValues("max_connections")); got != 1 {
		t.Errorf("%v refused past the total, want 1", got)
	}

	// Closing a connection frees its place once the server notices.
	a1.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp := get(from("127.0.0.1"))
		if resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a closed connection's place was not freed: %s", resp.Status)
		}
		time.Sleep(20 * time.Millisecond) // polling for the server to see the close
	}
}

// readFromConn records what its ReadFrom is given.
type readFromConn struct {
	net.Conn
	got []io.Reader
}

func (c *readFromConn) ReadFrom(r io.Reader) (int64, error) {
	c.got = append(c.got, r)
	return io.Copy(io.Discard, r)
}

// TestLimitsKeepSendfile: the listener's connections pass a file on to
// the connection's ReadFrom (sendfile(2)) in chunks, each a file under a
// single *io.LimitedReader as the kernel path wants it, and keep
// CloseWrite.
func TestLimitsKeepSendfile(t *testing.T) {
	file, data := bigFile(t, 1<<20)
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lln := Limits{MinBodyRate: 64 << 10, BodyTimeout: time.Second}.Listener(nil, NewMetrics(), nil).(*limitListener)
	defer close(lln.done)
	inner := &readFromConn{}
	c := &limitedConn{Conn: inner, l: lln, slack: lln.pace.window}
	src := &io.LimitedReader{R: f, N: int64(len(data)) - 100} // as http.ServeContent passes it
	n, err := c.ReadFrom(src)
	if err != nil || n != int64(len(data))-100 || src.N != 0 {
		t.Fatalf("ReadFrom = %d, %v (left %d); want %d", n, err, src.N, len(data)-100)
	}
	if len(inner.got) < 2 {
		t.Errorf("%d ReadFrom calls for 1 MiB at 64 KiB/s; want it in chunks", len(inner.got))
	}
	for _, r := range inner.got {
		if lr, ok := r.(*io.LimitedReader); !ok || lr.R != io.Reader(f) {
			t.Fatalf("ReadFrom got %T, want an *io.LimitedReader over the *os.File", r)
		}
	}
	var conn net.Conn = c
	if _, ok := conn.(interface{ CloseWrite() error }); !ok {
		t.Error("limitedConn hides CloseWrite")
	}
}

func TestLimitsString(t *testing.T) {
	got := Limits{MaxClientConnections: -1}.String()
	for _, want := range []string{"header timeout 10s", "at least 1024 bytes/s within 1m0s", "connections 4096", "per client none"} {
		if !strings.Contains(got, want) {
			t.Errorf("Limits.String() = %q, want it to say %q", got, want)
		}
	}
}

// counterValue reads a counter.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}
