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

	"oras.land/oras-go/v2/registry/remote/retry"
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

// NewHTTPClient returns the client nixoci talks to registries with: it
// retries what is safe to retry (5xx, 429 honouring Retry-After, 408,
// resets, for requests whose body can be replayed) with exponential
// backoff, and bounds every wait by timeout so that a stalled registry
// fails instead of hanging.
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
	return &http.Client{Transport: retry.NewTransport(&idleTransport{base: tr, idle: timeout})}
}

// DefaultHTTPClient is NewHTTPClient(TimeoutFromEnv()).
func DefaultHTTPClient() *http.Client { return NewHTTPClient(TimeoutFromEnv()) }

// idleTransport makes response bodies fail with ErrStalled when a read
// waits longer than idle for data.
type idleTransport struct {
	base http.RoundTripper
	idle time.Duration
}

func (t *idleTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err == nil {
		resp.Body = newIdleBody(resp.Body, t.idle, req.URL.Redacted())
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
