package serving

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// processCPU is the CPU time (user and system) the process has used:
// client and server of the benchmark, less disturbed than wall time by
// other work on a shared machine.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLimitsNarinfo: a narinfo-sized answer (1 KiB) over a
// kept-alive loopback connection, served by a bare http.Server and by
// one within Limits (bounded listener, paced bodies): the difference is
// what the limits cost a request on the common path, in CPU time
// (cpu-ns/op: client and server, the client the same in both). bench/serve-limits.sh
// runs it interleaved and prints medians.
func BenchmarkLimitsNarinfo(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1024)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/x-nix-narinfo")
		w.Write(body)
	})
	for _, tc := range []struct {
		name   string
		limits *Limits
	}{
		{"bare", nil},
		{"limits", &Limits{}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			var hs *http.Server
			if tc.limits == nil {
				hs = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
				go hs.Serve(ln)
			} else {
				m := NewMetrics()
				hs = tc.limits.Server(h, m, slog.New(slog.NewTextHandler(io.Discard, nil)))
				go hs.Serve(tc.limits.Listener(ln, m, nil))
			}
			defer hs.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			url := "http://" + ln.Addr().String() + "/0123456789abcdfghijklmnpqrsvwxyz.narinfo"
			b.ReportAllocs()
			cpu0 := processCPU()
			for b.Loop() {
				resp, err := client.Get(url)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// discardConn is a connection whose writes cost nothing.
type discardConn struct{ net.Conn }

func (discardConn) Write(b []byte) (int, error) { return len(b), nil }

// BenchmarkPacedWrite: a narinfo-sized write to a connection that costs
// nothing, bare and through the listener's paced connection: what pacing
// adds to each write of a response (a write to a socket costs
// microseconds).
func BenchmarkPacedWrite(b *testing.B) {
	lln := Limits{}.Listener(nil, NewMetrics(), nil).(*limitListener)
	defer close(lln.done)
	body := bytes.Repeat([]byte("x"), 1024)
	paced := &limitedConn{Conn: discardConn{}, l: lln, slack: lln.pace.window}
	for _, tc := range []struct {
		name string
		c    net.Conn
	}{{"bare", discardConn{}}, {"paced", paced}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tc.c.Write(body)
			}
		})
	}
}
