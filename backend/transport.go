package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// DefaultTimeout bounds connecting, waiting for response headers, and
// each read of a response body that makes no progress. NIXOCI_TIMEOUT (a
// Go duration such as 30s) overrides it for the command-line tool.
const DefaultTimeout = 60 * time.Second

// ErrStalled: a registry stopped sending a response body mid-way.
var ErrStalled = errors.New("registry stalled")

// TimeoutFromEnv returns NIXOCI_TIMEOUT if set and valid, else
// DefaultTimeout.
func TimeoutFromEnv() time.Duration {
	if v := os.Getenv("NIXOCI_TIMEOUT"); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d
		}
	}
	return DefaultTimeout
}

// NewHTTPClient returns the client nixoci talks to registries and binary
// caches with. It bounds every wait by timeout (connecting, response
// headers, and each read or write that makes no progress) so that a
// stalled server fails instead of hanging. It does not retry: operations
// are retried as a whole (Retry, RetryAttempts), and the client only
// passes each response's Retry-After on to that.
func NewHTTPClient(timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	dialer := &net.Dialer{Timeout: min(timeout, 10*time.Second), KeepAlive: 30 * time.Second}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &writeDeadlineConn{Conn: c, timeout: timeout}, nil
	}
	tr.ResponseHeaderTimeout = timeout
	tr.MaxIdleConnsPerHost = 64
	return &http.Client{Transport: &idleTransport{base: tr, idle: timeout}}
}

// DefaultHTTPClient is NewHTTPClient(TimeoutFromEnv()).
func DefaultHTTPClient() *http.Client { return NewHTTPClient(TimeoutFromEnv()) }

// idleTransport makes response bodies fail with ErrStalled when a read
// waits longer than idle for data, and notes Retry-After headers for the
// operation's retries.
type idleTransport struct {
	base http.RoundTripper
	idle time.Duration
}

func (t *idleTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err == nil {
		noteRetryAfter(req, resp)
		resp.Body = newIdleBody(resp.Body, t.idle, RedactURL(req.URL))
	}
	return resp, err
}

type idleBody struct {
	rc       io.ReadCloser
	idle     time.Duration
	url      string
	timer    *time.Timer
	timedOut atomic.Bool
}

func newIdleBody(rc io.ReadCloser, idle time.Duration, url string) *idleBody {
	b := &idleBody{rc: rc, idle: idle, url: url}
	b.timer = time.AfterFunc(time.Hour, func() {
		b.timedOut.Store(true)
		rc.Close() // unblocks the pending Read
	})
	b.timer.Stop()
	return b
}

// Read bounds only the time spent inside Read, so a slow consumer is
// never mistaken for a stalled registry.
func (b *idleBody) Read(p []byte) (int, error) {
	b.timer.Reset(b.idle)
	n, err := b.rc.Read(p)
	b.timer.Stop()
	if b.timedOut.Load() {
		return n, fmt.Errorf("%s: no data for %v: %w", b.url, b.idle, ErrStalled)
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	return b.rc.Close()
}

// writeDeadlineConn fails a write (of a request body) that makes no
// progress for timeout, as idleBody does for reads.
type writeDeadlineConn struct {
	net.Conn
	timeout time.Duration
}

func (c *writeDeadlineConn) Write(b []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(b)
}
