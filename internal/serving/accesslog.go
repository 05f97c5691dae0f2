package serving

import (
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// AccessLog writes one line per request, in the format of slog's text
// handler (time=… level=INFO msg=request method=… path=… status=…
// bytes=… duration=… remote=… proto=…), never with headers: they may carry
// credentials.
//
// It is cheap enough to leave on in front of a busy cache: each record is
// formatted without allocating into a pooled buffer and appended to a
// shared one, which is written out when it holds 64 KiB, once a second,
// and at Close. Writes are of whole lines, so lines of other writers to
// the same file (slog on stderr) fall between records, never inside one;
// a record may reach the file up to a second after lines logged later.
type AccessLog struct {
	w    io.Writer
	mu   sync.Mutex
	buf  []byte
	err  error // the first write error, reported by Close
	shut bool
	stop chan struct{}
	done chan struct{}
}

// accessLogBuffer is how much is held before it is written out.
const accessLogBuffer = 64 << 10

// NewAccessLog starts an access log writing to w. Close it to write
// what is buffered.
func NewAccessLog(w io.Writer) *AccessLog {
	t := time.NewTicker(time.Second)
	l := newAccessLog(w, t.C)
	go func() { <-l.done; t.Stop() }()
	return l
}

// newAccessLog starts an access log written out at every tick.
func newAccessLog(w io.Writer, tick <-chan time.Time) *AccessLog {
	l := &AccessLog{w: w, buf: make([]byte, 0, accessLogBuffer), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			select {
			case <-tick:
				l.Flush()
			case <-l.stop:
				return
			}
		}
	}()
	return l
}

// Flush writes out what is buffered.
func (l *AccessLog) Flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked()
	return l.err
}

func (l *AccessLog) flushLocked() {
	if len(l.buf) == 0 {
		return
	}
	if _, err := l.w.Write(l.buf); err != nil && l.err == nil {
		l.err = err
	}
	l.buf = l.buf[:0]
}

// Close writes out what is buffered and stops the periodic writes; it
// returns the first write error. Records logged after Close are written
// at once.
func (l *AccessLog) Close() error {
	l.mu.Lock()
	if l.shut {
		l.mu.Unlock()
		return l.Flush()
	}
	l.shut = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	return l.Flush()
}

var recordPool = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// log records one request answered with status and n body bytes, begun
// at start and taking d.
func (l *AccessLog) log(r *http.Request, status int, n int64, start time.Time, d time.Duration) {
	bp := recordPool.Get().(*[]byte)
	b := appendRecord((*bp)[:0], r, status, n, start, d)
	l.mu.Lock()
	if len(l.buf)+len(b) > cap(l.buf) {
		l.flushLocked()
	}
	l.buf = append(l.buf, b...)
	if l.shut {
		l.flushLocked()
	}
	l.mu.Unlock()
	*bp = b
	recordPool.Put(bp)
}

// appendRecord appends the line of one request to b.
func appendRecord(b []byte, r *http.Request, status int, n int64, start time.Time, d time.Duration) []byte {
	b = append(b, "time="...)
	b = start.AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, " level=INFO msg=request method="...)
	b = appendValue(b, r.Method)
	b = append(b, " path="...)
	b = appendValue(b, r.URL.EscapedPath())
	b = append(b, " status="...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, " bytes="...)
	b = strconv.AppendInt(b, n, 10)
	b = append(b, " duration="...)
	b = appendDuration(b, d.Round(time.Microsecond))
	b = append(b, " remote="...)
	b = appendValue(b, r.RemoteAddr)
	b = append(b, " proto="...)
	b = appendValue(b, r.Proto)
	return append(b, '\n')
}

// appendValue appends s, quoted as slog's text handler quotes values: if
// it is empty or has spaces, quotes, '=' or anything not printable.
func appendValue(b []byte, s string) []byte {
	if needsQuoting(s) {
		return strconv.AppendQuote(b, s)
	}
	return append(b, s...)
}

func needsQuoting(s string) bool {
	if s == "" {
		return true
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == '"' || c == '=' || c == 0x7f || c >= utf8.RuneSelf {
			return true
		}
	}
	return false
}

// appendDuration appends d (whole microseconds) as time.Duration's
// String does below a minute: "850µs", "12.5ms", "3.2s".
func appendDuration(b []byte, d time.Duration) []byte {
	switch {
	case d < time.Millisecond:
		return append(strconv.AppendInt(b, int64(d/time.Microsecond), 10), "µs"...)
	case d < time.Second:
		return append(strconv.AppendFloat(b, float64(d)/float64(time.Millisecond), 'f', -1, 64), "ms"...)
	}
	return append(strconv.AppendFloat(b, d.Seconds(), 'f', -1, 64), 's')
}
