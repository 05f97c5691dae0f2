package serving

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"
)

// chunkOf is the most written to a connection under one deadline for
// rate and window: half what the window allows at the minimum rate, so
// a client at that rate is judged several times a window, within 4 KiB
// and 256 KiB (where sendfile(2) keeps its speed).
func chunkOf(rate int64, window time.Duration) int {
	return int(min(max(rate*int64(window/time.Millisecond)/2000, 4<<10), 256<<10))
}

// pacer cuts request and response bodies that fall behind a minimum
// rate (Limits.MinBodyRate, Limits.BodyTimeout), with connection
// deadlines set before each read or write of a body and moved as bytes
// flow.
type pacer struct {
	next    http.Handler
	rate    int64
	window  time.Duration
	chunk   int
	metrics *Metrics
	log     *slog.Logger
}

// deadliner is what net/http's response writer offers for
// http.ResponseController: asserted directly, it costs no allocation.
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// buffered is what the server buffers of a response before it writes to
// the connection (its 2 KiB chunking buffer, with room to spare): writes
// smaller than that in all cannot block on the client, and get no
// deadline of their own; the one set when the handler returns covers
// their final flush.
const buffered = 2 << 10

func (p *pacer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	dl, ok := w.(deadliner)
	if !ok {
		p.next.ServeHTTP(w, r) // not net/http's (a test recorder)
		return
	}
	pw := &pacedWriter{ResponseWriter: w, dl: dl, pace: p.newPace(), p: p, r: r}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &pacedBody{ReadCloser: r.Body, dl: dl, pace: p.newPace(), p: p, r: r}
	}
	p.next.ServeHTTP(pw, r)
	// What the server still holds buffered (at most a few KiB) is written
	// after the handler returns, under this deadline; net/http clears it
	// once the response is out.
	dl.SetWriteDeadline(time.Now().Add(max(pw.slack, 0) + pw.allowance(8<<10)))
}

func (p *pacer) newPace() pace {
	return pace{nsPerByte: float64(time.Second) / float64(p.rate), window: p.window, slack: p.window}
}

// cut counts and logs a body cut for slowness, and returns the error
// the handler sees.
func (p *pacer) cut(r *http.Request, direction string, err error) error {
	p.metrics.bodiesCut.WithLabelValues(direction).Inc()
	p.log.Warn("cut a client too slow", "direction", direction, "method", r.Method, "path", r.URL.EscapedPath(),
		"remote", r.RemoteAddr, "min_rate", p.rate, "timeout", p.window)
	return fmt.Errorf("%w: %s body slower than %d bytes/s for %v: %w", ErrSlowClient, direction, p.rate, p.window, err)
}

// pace is the account of one body's transfer: the time a transfer may
// still fall behind the minimum rate before it is cut (slack), earned
// back by bytes moved, spent by time waiting on the client.
type pace struct {
	nsPerByte float64
	window    time.Duration
	slack     time.Duration
}

// allowance is the time n bytes may take at the minimum rate.
func (p *pace) allowance(n int) time.Duration { return time.Duration(float64(n) * p.nsPerByte) }

// moved records n bytes moved in d.
func (p *pace) moved(n int, d time.Duration) {
	p.slack = min(p.window, p.slack+p.allowance(n)-d)
}

// pacedWriter is a response body written under moving deadlines.
type pacedWriter struct {
	http.ResponseWriter
	dl deadliner
	pace
	p       *pacer
	r       *http.Request
	unpaced int // bytes written without a deadline of their own
	cut     bool
}

func (w *pacedWriter) Write(b []byte) (int, error) {
	if w.unpaced+len(b) < buffered {
		w.unpaced += len(b)
		return w.ResponseWriter.Write(b)
	}
	w.unpaced = 0
	written := 0
	for len(b) > 0 {
		n := min(len(b), w.p.chunk)
		start := time.Now()
		w.dl.SetWriteDeadline(start.Add(max(w.slack, 0) + w.allowance(n)))
		m, err := w.ResponseWriter.Write(b[:n])
		w.moved(m, time.Since(start))
		written += m
		b = b[m:]
		if err != nil {
			return written, w.failed(err)
		}
	}
	return written, nil
}

// ReadFrom sends files with sendfile(2) as the server does, a chunk at a
// time; other readers go through Write, so that time spent waiting on
// them (a backend) is not counted against the client.
func (w *pacedWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok || !isFile(src) {
		return io.Copy(writerOnly{w}, src)
	}
	var total int64
	for {
		start := time.Now()
		w.dl.SetWriteDeadline(start.Add(max(w.slack, 0) + w.allowance(w.p.chunk)))
		n, err := rf.ReadFrom(io.LimitReader(src, int64(w.p.chunk)))
		w.moved(int(n), time.Since(start))
		total += n
		if err != nil {
			return total, w.failed(err)
		}
		if n < int64(w.p.chunk) {
			return total, nil
		}
	}
}

func (w *pacedWriter) failed(err error) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) || w.cut {
		return err
	}
	w.cut = true
	return w.p.cut(w.r, "response", err)
}

func (w *pacedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// writerOnly hides a writer's ReadFrom, so that io.Copy uses Write.
type writerOnly struct{ io.Writer }

// isFile reports whether src is a file, or a file read up to a limit (as
// http.ServeContent and io.CopyN pass it): what sendfile(2) sends.
func isFile(src io.Reader) bool {
	if lr, ok := src.(*io.LimitedReader); ok {
		src = lr.R
	}
	_, ok := src.(*os.File)
	return ok
}

// pacedBody is a request body read under moving deadlines.
type pacedBody struct {
	io.ReadCloser
	dl deadliner
	pace
	p       *pacer
	r       *http.Request
	started bool
	cut     bool
}

func (b *pacedBody) Read(p []byte) (int, error) {
	start := time.Now()
	if !b.started {
		// The first read may answer "Expect: 100-continue" first.
		b.started = true
		b.dl.SetWriteDeadline(start.Add(b.window))
	}
	b.dl.SetReadDeadline(start.Add(max(b.slack, 0)))
	n, err := b.ReadCloser.Read(p)
	b.moved(n, time.Since(start))
	switch {
	case err == io.EOF:
		// The server reads on from here to notice a client going away,
		// and ends the request if that read fails: no deadline for it.
		b.dl.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded) && !b.cut:
		b.cut = true
		err = b.p.cut(b.r, "request", err)
	}
	return n, err
}

// Flush writes out what the server holds buffered (a few KiB at most).
func (w *pacedWriter) Flush() {
	w.unpaced = 0
	start := time.Now()
	w.dl.SetWriteDeadline(start.Add(max(w.slack, 0) + w.allowance(8<<10)))
	if err := http.NewResponseController(w.ResponseWriter).Flush(); err != nil {
		w.failed(err)
	}
	w.moved(0, time.Since(start))
}
