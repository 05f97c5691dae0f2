package serving

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixoci/nixoci/internal/testenv"
)

// TestCertFilesReload: a renewed pair is served from the next check on;
// a pair that does not load is logged and the one before kept.
func TestCertFilesReload(t *testing.T) {
	ca := testenv.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first := ca.Issue(t, certFile, keyFile)
	var logs bytes.Buffer
	c, err := LoadCertFiles(certFile, keyFile, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	c.every = 0
	serial := func() *big.Int {
		t.Helper()
		cert, err := c.GetCertificate(nil)
		if err != nil || cert == nil || cert.Leaf == nil {
			t.Fatalf("GetCertificate: %v, %v", cert, err)
		}
		return cert.Leaf.SerialNumber
	}
	if got := serial(); got.Cmp(first) != 0 {
		t.Fatalf("serving serial %v, want %v", got, first)
	}
	second := ca.Issue(t, certFile, keyFile)
	if got := serial(); got.Cmp(second) != 0 {
		t.Fatalf("after renewal serving serial %v, want %v", got, second)
	}
	if err := os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := serial(); got.Cmp(second) != 0 {
		t.Fatalf("after a bad write serving serial %v, want the last good one %v", got, second)
	}
	serial() // the same bad files: logged once
	if n := strings.Count(logs.String(), "do not load"); n != 1 {
		t.Errorf("%d warnings about the bad pair, want 1:\n%s", n, logs.String())
	}
	third := ca.Issue(t, certFile, keyFile)
	if got := serial(); got.Cmp(third) != 0 {
		t.Fatalf("after a good write serving serial %v, want %v", got, third)
	}
	if _, err := LoadCertFiles(filepath.Join(dir, "missing.crt"), keyFile, nil); err == nil || !strings.Contains(err.Error(), "missing.crt") {
		t.Errorf("a missing certificate file: %v, want an error naming it", err)
	}
}

// tlsServer serves h over TLS within l on a loopback port and returns its
// address and an HTTP/2 client trusting it.
func tlsServer(t *testing.T, l Limits, m *Metrics, h http.Handler) (string, *http.Client) {
	t.Helper()
	ca := testenv.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ca.Issue(t, certFile, keyFile)
	certs, err := LoadCertFiles(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := l.Server(h, m, nil)
	hs.TLSConfig = certs.TLSConfig()
	ll := l.TLSListener(ln, hs.TLSConfig, m, nil)
	go hs.Serve(ll)
	t.Cleanup(func() { hs.Close() })
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: ca.Pool},
		ForceAttemptHTTP2: true,
	}}
	t.Cleanup(client.CloseIdleConnections)
	return ln.Addr().String(), client
}

// TestHTTP2StreamPaced: over HTTP/2 a client that stops reading one
// response (its stream's window shut) while its connection goes on has
// that stream cut after the body timeout; the connection, and the other
// requests on it, go on.
func TestHTTP2StreamPaced(t *testing.T) {
	m := NewMetrics()
	big := bytes.Repeat([]byte("x"), 16<<20) // past the client's stream window (4 MiB)
	handlerDone := make(chan error, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		_, err := w.Write(big)
		handlerDone <- err
	})
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	addr, client := tlsServer(t, Limits{MinBodyRate: 1 << 10, BodyTimeout: 500 * time.Millisecond}, m, mux)

	resp, err := client.Get("https://" + addr + "/big")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("served over %s, want HTTP/2", resp.Proto)
	}
	// Not reading /big: the server's write waits on its stream window.
	select {
	case err := <-handlerDone:
		if !errors.Is(err, ErrSlowClient) {
			t.Errorf("the stalled stream's write ended with %v, want ErrSlowClient", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a stream whose client stopped reading was not cut")
	}
	if got := counterValue(m.bodiesCut.WithLabelValues("response")); got != 1 {
		t.Errorf("cut responses counted %v, want 1", got)
	}
	small, err := client.Get("https://" + addr + "/small")
	if err != nil {
		t.Fatalf("the connection after one stream was cut: %v", err)
	}
	body, _ := io.ReadAll(small.Body)
	small.Body.Close()
	if string(body) != "ok" || small.ProtoMajor != 2 {
		t.Errorf("after the cut: %s %q", small.Proto, body)
	}
	if n, err := io.Copy(io.Discard, resp.Body); err == nil || n >= int64(len(big)) {
		t.Errorf("the cut stream gave %d bytes and %v, want an error before the end", n, err)
	}
}

// TestHTTP2StreamsBounded: one connection has at most MaxStreams
// requests in flight; the others wait for a place.
func TestHTTP2StreamsBounded(t *testing.T) {
	var cur, most atomic.Int32
	var remotes sync.Map
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		remotes.Store(r.RemoteAddr, true)
		n := cur.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		cur.Add(-1)
		io.WriteString(w, "ok")
	})
	addr, client := tlsServer(t, Limits{MaxStreams: 3}, NewMetrics(), h)
	// All on one connection, waiting for a place there rather than
	// opening another.
	client.Transport.(*http.Transport).HTTP2 = &http.HTTP2Config{StrictMaxConcurrentRequests: true}
	done := make(chan error, 6)
	for range 6 {
		go func() {
			resp, err := client.Get("https://" + addr + "/")
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.ProtoMajor != 2 {
					err = fmt.Errorf("served over %s", resp.Proto)
				}
			}
			done <- err
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	for cur.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests in flight, want 3", cur.Load())
		}
		time.Sleep(10 * time.Millisecond) // polling for the requests to arrive
	}
	// Proving a negative: for a while, no fourth one comes in.
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if n := cur.Load(); n > 3 {
			t.Fatalf("%d requests in flight on a connection with MaxStreams 3", n)
		}
	}
	close(release)
	for range 6 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	if m := most.Load(); m != 3 {
		t.Errorf("at most %d requests were in flight at once, want 3", m)
	}
	conns := 0
	remotes.Range(func(any, any) bool { conns++; return true })
	if conns != 1 {
		t.Errorf("the requests came on %d connections, want 1", conns)
	}
}

// TestTLSRefusal: past the bound on connections a TLS client is answered
// 503 with Retry-After over TLS, as a plain one is, not dropped.
func TestTLSRefusal(t *testing.T) {
	m := NewMetrics()
	addr, client := tlsServer(t, Limits{MaxConnections: 1}, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	held, err := tls.Dial("tcp", addr, client.Transport.(*http.Transport).TLSClientConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	resp, err := client.Get("https://" + addr + "/")
	if err != nil {
		t.Fatalf("past the bound: %v, want a 503", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("past the bound: %s, Retry-After %q; want 503, 1", resp.Status, resp.Header.Get("Retry-After"))
	}
	if got := counterValue(m.connsRefused.WithLabelValues("max_connections")); got != 1 {
		t.Errorf("refused connections counted %v, want 1", got)
	}
}
