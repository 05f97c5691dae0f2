package serving

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// writes records each Write call separately.
type writes struct {
	mu    sync.Mutex
	calls []string
	wrote chan struct{} // gets a value per Write, if not nil
	err   error
}

func (w *writes) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.calls = append(w.calls, string(p))
	w.mu.Unlock()
	if w.wrote != nil {
		w.wrote <- struct{}{}
	}
	return len(p), w.err
}

func (w *writes) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.calls, "")
}

func request(method, target string, header ...string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	return r
}

// http2Request is request as it comes over HTTP/2.
func http2Request(method, target string) *http.Request {
	r := request(method, target)
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0
	return r
}

// TestAccessLogRecord: one line in slog's text format, values quoted
// where slog quotes them, headers never.
func TestAccessLogRecord(t *testing.T) {
	start := time.Date(2026, 11, 23, 14, 29, 5, 123456789, time.UTC)
	for _, tc := range []struct {
		name   string
		r      *http.Request
		status int
		n      int64
		d      time.Duration
		want   string
	}{
		{"narinfo", request("GET", "/0123456789abcdfghijklmnpqrsvwxyz.narinfo"), 200, 526, 12345 * time.Nanosecond,
			`time=2026-11-23T14:29:05.123Z level=INFO msg=request method=GET path=/0123456789abcdfghijklmnpqrsvwxyz.narinfo status=200 bytes=526 duration=12µs remote=192.0.2.1:1234 proto=HTTP/1.1`},
		{"http/2", http2Request("GET", "/nar/x.nar.zst"), 200, 4096, 12500 * time.Microsecond,
			`time=2026-11-23T14:29:05.123Z level=INFO msg=request method=GET path=/nar/x.nar.zst status=200 bytes=4096 duration=12.5ms remote=192.0.2.1:1234 proto=HTTP/2.0`},
		{"milliseconds", request("HEAD", "/nar/x.nar.zst"), 404, 0, 12500 * time.Microsecond,
			`time=2026-11-23T14:29:05.123Z level=INFO msg=request method=HEAD path=/nar/x.nar.zst status=404 bytes=0 duration=12.5ms remote=192.0.2.1:1234 proto=HTTP/1.1`},
		{"seconds", request("PUT", "/nar/y.nar"), 201, 1 << 20, 3200 * time.Millisecond,
			`time=2026-11-23T14:29:05.123Z level=INFO msg=request method=PUT path=/nar/y.nar status=201 bytes=1048576 duration=3.2s remote=192.0.2.1:1234 proto=HTTP/1.1`},
		{"escaped path", request("GET", `/a%20b"c`), 400, 12, time.Microsecond,
			`time=2026-11-23T14:29:05.123Z level=INFO msg=request method=GET path=/a%20b%22c status=400 bytes=12 duration=1µs remote=192.0.2.1:1234 proto=HTTP/1.1`},
		{"headers", request("GET", "/nix-cache-info", "Authorization", "Basic c2Vrcml0", "Cookie", "sekrit"), 200, 50, time.Millisecond,
			`time=2026-11-23T14:29:05.123Z level=INFO msg=request method=GET path=/nix-cache-info status=200 bytes=50 duration=1ms remote=192.0.2.1:1234 proto=HTTP/1.1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := string(appendRecord(nil, tc.r, tc.status, tc.n, start, tc.d.Round(time.Microsecond)))
			if got != tc.want+"\n" {
				t.Errorf("record:\n got %q\nwant %q", got, tc.want+"\n")
			}
		})
	}
}

func TestAppendValueQuotes(t *testing.T) {
	for in, want := range map[string]string{
		"GET":          "GET",
		"":             `""`,
		"a b":          `"a b"`,
		`a"b`:          `"a\"b"`,
		"a=b":          `"a=b"`,
		"a\nb":         `"a\nb"`,
		"[::1]:8080":   "[::1]:8080",
		"caf\u00e9":    `"café"`,
		"x\x7f":        `"x\x7f"`,
		"192.0.2.1:80": "192.0.2.1:80",
	} {
		if got := string(appendValue(nil, in)); got != want {
			t.Errorf("appendValue(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestAccessLogWholeLines: concurrent requests give one line each, every
// write ends at a line's end, and Close writes out the rest.
func TestAccessLogWholeLines(t *testing.T) {
	w := &writes{}
	l := newAccessLog(w, nil)
	const goroutines, each = 8, 2000 // about 3 MiB of records: many 64 KiB writes
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				l.log(request("GET", "/g"+strconv.Itoa(g)+"/"+strconv.Itoa(i)+".narinfo"), 200, int64(i), time.Now(), time.Millisecond)
			}
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if len(w.calls) < 2 {
		t.Errorf("%d writes: the buffer was never written out before Close", len(w.calls))
	}
	seen := map[string]bool{}
	for i, c := range w.calls {
		if !strings.HasSuffix(c, "\n") || len(c) > accessLogBuffer {
			t.Fatalf("write %d: %d bytes, ends %q: not whole lines within the buffer", i, len(c), c[max(0, len(c)-20):])
		}
		for _, line := range strings.Split(strings.TrimSuffix(c, "\n"), "\n") {
			_, rest, ok := strings.Cut(line, " path=")
			path, _, _ := strings.Cut(rest, " ")
			if !ok || !strings.HasPrefix(line, "time=") || seen[path] {
				t.Fatalf("bad or repeated line %q", line)
			}
			seen[path] = true
		}
	}
	if len(seen) != goroutines*each {
		t.Errorf("%d lines, want %d", len(seen), goroutines*each)
	}
	// After Close, records are written at once.
	l.log(request("GET", "/late"), 200, 0, time.Now(), 0)
	if !strings.Contains(w.String(), "path=/late ") {
		t.Errorf("a record logged after Close was not written")
	}
}

// TestAccessLogTick: a tick writes out what is buffered.
func TestAccessLogTick(t *testing.T) {
	w := &writes{wrote: make(chan struct{}, 1)}
	tick := make(chan time.Time)
	l := newAccessLog(w, tick)
	defer l.Close()
	l.log(request("GET", "/one"), 200, 0, time.Now(), 0)
	if s := w.String(); s != "" {
		t.Fatalf("written before a tick: %q", s)
	}
	tick <- time.Now()
	<-w.wrote
	if s := w.String(); !strings.Contains(s, "path=/one ") {
		t.Errorf("after a tick: %q", s)
	}
	tick <- time.Now() // nothing buffered: no write
	l.log(request("GET", "/two"), 200, 0, time.Now(), 0)
	tick <- time.Now()
	<-w.wrote
	if n := len(w.calls); n != 2 {
		t.Errorf("%d writes, want 2 (an empty buffer is not written)", n)
	}
}

// TestAccessLogWriteError: Close reports the first write error.
func TestAccessLogWriteError(t *testing.T) {
	broken := errors.New("disk full")
	l := newAccessLog(&writes{err: broken}, nil)
	l.log(request("GET", "/x"), 200, 0, time.Now(), 0)
	if err := l.Close(); !errors.Is(err, broken) {
		t.Errorf("Close = %v, want %v", err, broken)
	}
}

// TestAccessLogAllocatesNothing: logging a request allocates nothing.
func TestAccessLogAllocatesNothing(t *testing.T) {
	l := newAccessLog(&bytes.Buffer{}, nil)
	defer l.Close()
	r := request("GET", "/0123456789abcdfghijklmnpqrsvwxyz.narinfo")
	start := time.Now()
	logOne := func() { l.log(r, 200, 526, start, 15*time.Microsecond) }
	logOne()
	if n := testing.AllocsPerRun(1000, logOne); n != 0 {
		t.Errorf("%v allocations per record", n)
	}
}

// BenchmarkAccessLog: one record, to /dev/null, against the slog record
// it replaced (one write each).
func BenchmarkAccessLog(b *testing.B) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer null.Close()
	r := request("GET", "/0123456789abcdfghijklmnpqrsvwxyz.narinfo")
	b.Run("AccessLog", func(b *testing.B) {
		l := NewAccessLog(null)
		defer l.Close()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.log(r, 200, 526, time.Now(), 15*time.Microsecond)
			}
		})
	})
	b.Run("slog", func(b *testing.B) {
		log := slog.New(slog.NewTextHandler(null, nil))
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				log.Info("request", "method", r.Method, "path", r.URL.EscapedPath(), "status", 200, "bytes", int64(526),
					"duration", (15 * time.Microsecond).Round(time.Microsecond), "remote", r.RemoteAddr)
			}
		})
	})
}
