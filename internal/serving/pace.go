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

// The minimum body rate (Limits.MinBodyRate, Limits.BodyTimeout) is
// kept as an account per transfer: the time it may still fall behind the
// rate before it is cut (its slack, at most the timeout), earned back by
// bytes moved at the rate's pace, spent by time waiting on the client.
// Responses are paced per connection, by the listener's writes (see
// limitedConn): every byte a client is sent goes through them, and they
// cost the common path nothing but two atomic stores. Over HTTP/2 that
// is not enough: a client can leave one stream's flow-control window
// shut while the connection moves on, and the handler writing that
// stream waits with nothing written to the connection. There each
// response is also paced by itself, by stream write deadlines
// (pacedStream). Request bodies are
// paced per request, by connection read deadlines (pacedBody): the
// connection's reads also wait for requests, which are not the body's.

// chunkOf is the most written or sent to a connection at once for rate
// and window: half what the window allows at the minimum rate, so a
// client at that rate is judged several times a window, within 4 KiB and
// 256 KiB (where sendfile(2) keeps its speed).
func chunkOf(rate int64, window time.Duration) int {
	return int(min(max(rate*int64(window/time.Millisecond)/2000, 4<<10), 256<<10))
}

// pace is what a transfer's account needs: the time a byte may take at
// the minimum rate, and the most slack there is.
type pace struct {
	nsPerByte float64
	window    time.Duration
}

func newPace(rate int64, window time.Duration) pace {
	return pace{nsPerByte: float64(time.Second) / float64(rate), window: window}
}

// allowance is the time n bytes may take at the minimum rate.
func (p pace) allowance(n int64) time.Duration { return time.Duration(float64(n) * p.nsPerByte) }

// after is the slack left after n bytes moved in d.
func (p pace) after(slack time.Duration, n int64, d time.Duration) time.Duration {
	return min(p.window, slack+p.allowance(n)-d)
}

// bodyPacer paces the request bodies of the requests it passes on.
type bodyPacer struct {
	next    http.Handler
	pace    pace
	rate    int64
	chunk   int // the most a paced stream writes under one deadline
	metrics *Metrics
	log     *slog.Logger
}

// deadliner is what net/http's response writer offers for
// http.ResponseController: asserted directly, it costs no allocation.
type deadliner interface {
	SetReadDeadline(time.Time) error
}

func (p *bodyPacer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Body != nil && r.Body != http.NoBody {
		if dl, ok := w.(deadliner); ok {
			r.Body = &pacedBody{ReadCloser: r.Body, dl: dl, p: p, r: r, slack: p.pace.window}
		}
	}
	if r.ProtoMajor != 2 {
		p.next.ServeHTTP(w, r)
		return
	}
	s := &pacedStream{ResponseWriter: w, rc: http.NewResponseController(w), p: p, r: r, slack: p.pace.window}
	// Every write is flushed under its deadline, so nothing of the body
	// is left buffered when the handler returns: what net/http sends
	// after it (headers, the end of the stream) is not flow-controlled.
	p.next.ServeHTTP(s, r)
}

// pacedBody is a request body read under moving deadlines.
type pacedBody struct {
	io.ReadCloser
	dl    deadliner
	p     *bodyPacer
	r     *http.Request
	slack time.Duration
	cut   bool
}

func (b *pacedBody) Read(p []byte) (int, error) {
	start := time.Now()
	b.dl.SetReadDeadline(start.Add(max(b.slack, 0)))
	n, err := b.ReadCloser.Read(p)
	b.slack = b.p.pace.after(b.slack, int64(n), time.Since(start))
	switch {
	case err == io.EOF:
		// The server reads on from here to notice a client going away,
		// and ends the request if that read fails: no deadline for it.
		b.dl.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded) && !b.cut:
		b.cut = true
		b.p.metrics.bodiesCut.WithLabelValues("request").Inc()
		b.p.log.Warn("cut a client too slow sending a request body", "method", b.r.Method, "path", b.r.URL.EscapedPath(),
			"remote", b.r.RemoteAddr, "min_rate", b.p.rate, "timeout", b.p.pace.window)
		err = fmt.Errorf("%w: request body slower than %d bytes/s for %v: %w", ErrSlowClient, b.p.rate, b.p.pace.window, err)
	}
	return n, err
}

// pacedStream is an HTTP/2 response written under a deadline per write:
// a write that waits on the client (its stream's flow-control window
// shut) longer than the stream's slack and its own length at the
// minimum rate allow resets the stream. The deadline is set only while
// a write is in progress, so time spent waiting on a backend never
// counts.
type pacedStream struct {
	http.ResponseWriter
	rc    *http.ResponseController
	p     *bodyPacer
	r     *http.Request
	slack time.Duration
	cut   bool
}

func (s *pacedStream) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		n := min(len(b), s.p.chunk)
		m, err := s.paced(int64(n), func() (int, error) {
			m, err := s.ResponseWriter.Write(b[:n])
			if err == nil {
				err = s.rc.Flush() // the bytes leave under this deadline
			}
			return m, err
		})
		written += m
		b = b[m:]
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// Flush sends what is buffered, paced as a write.
func (s *pacedStream) Flush() {
	s.paced(0, func() (int, error) { return 0, s.rc.Flush() })
}

// paced runs write, of n bytes, under the stream's deadline.
func (s *pacedStream) paced(n int64, write func() (int, error)) (int, error) {
	if s.cut {
		return 0, fmt.Errorf("%w: response slower than %d bytes/s for %v", ErrSlowClient, s.p.rate, s.p.pace.window)
	}
	start := time.Now()
	deadline := start.Add(max(s.slack, 0) + s.p.pace.allowance(n))
	s.rc.SetWriteDeadline(deadline)
	m, err := write()
	s.slack = s.p.pace.after(s.slack, int64(m), time.Since(start))
	// A stream reset at its deadline fails the write with a stream error
	// rather than a timeout: the clock tells.
	if err != nil && (errors.Is(err, os.ErrDeadlineExceeded) || !time.Now().Before(deadline)) {
		s.cut = true
		s.p.metrics.bodiesCut.WithLabelValues("response").Inc()
		s.p.log.Warn("cut a client too slow reading a response", "method", s.r.Method, "path", s.r.URL.EscapedPath(),
			"remote", s.r.RemoteAddr, "proto", s.r.Proto, "min_rate", s.p.rate, "timeout", s.p.pace.window)
		return m, fmt.Errorf("%w: response slower than %d bytes/s for %v: %w", ErrSlowClient, s.p.rate, s.p.pace.window, err)
	}
	if err == nil {
		s.rc.SetWriteDeadline(time.Time{})
	}
	return m, err
}

// Unwrap lets http.ResponseController reach the server's writer.
func (s *pacedStream) Unwrap() http.ResponseWriter { return s.ResponseWriter }
