package serving

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// busyResponse answers a connection past the bounds on connections,
// before its request is read. Nix retries a 503 (and curl, docker and
// containerd do likewise).
var busyResponse = []byte("HTTP/1.1 503 Service Unavailable\r\n" +
	"Retry-After: " + strconv.Itoa(RetryAfter) + "\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Length: 21\r\n" +
	"Connection: close\r\n\r\n" +
	"too many connections\n")

// maxRefusing bounds the refused connections being closed at once (each
// lingers up to a second so that the client reads the 503 rather than a
// reset); past it they are closed at once.
const maxRefusing = 64

// Listener returns ln bounded by l.MaxConnections and
// l.MaxClientConnections, counting into m. Serve l.Server on it: its
// connections are reset when closed after a client was cut for
// slowness.
func (l Limits) Listener(ln net.Listener, m *Metrics) net.Listener {
	l = l.withDefaults()
	return &limitListener{
		Listener: ln, max: l.MaxConnections, perClient: l.MaxClientConnections,
		clients: map[string]int{}, refusing: make(chan struct{}, maxRefusing), metrics: m,
	}
}

type limitListener struct {
	net.Listener
	max, perClient int // 0: no bound
	metrics        *Metrics
	refusing       chan struct{}

	mu      sync.Mutex
	open    int
	clients map[string]int // client key -> connections open
}

// Accept returns the next connection within the bounds; those past them
// are answered 503 and closed here.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		client := connClient(c)
		if l.max == 0 && l.perClient == 0 {
			return &limitedConn{Conn: c, client: client}, nil
		}
		if reason := l.admit(client); reason != "" {
			l.metrics.connsRefused.WithLabelValues(reason).Inc()
			l.refuse(c)
			continue
		}
		l.metrics.conns.Inc()
		return &limitedConn{Conn: c, l: l, client: client}, nil
	}
}

// admit counts a new connection from client in, or says which bound it
// is past.
func (l *limitListener) admit(client string) (refused string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.max > 0 && l.open >= l.max:
		return "max_connections"
	case l.perClient > 0 && l.clients[client] >= l.perClient:
		return "client_connections"
	}
	l.open++
	l.clients[client]++
	return ""
}

func (l *limitListener) release(client string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.clients[client]--; l.clients[client] <= 0 {
		delete(l.clients, client)
	}
	l.metrics.conns.Dec()
}

// refuse answers c 503 and closes it: after the answer, its write side
// first, then, once the client has closed or a second has passed, the
// whole (closing at once with its request unread would reset the
// connection, and the client might never read the answer).
func (l *limitListener) refuse(c net.Conn) {
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write(busyResponse); err != nil {
		c.Close()
		return
	}
	select {
	case l.refusing <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-l.refusing }()
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		io.Copy(io.Discard, io.LimitReader(c, 64<<10))
		c.Close()
	}()
}

// connClient is the key of the client of c: its IP address, or its /64
// (the proxies a Clients trusts cannot be told apart here: no header
// has been read).
func connClient(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			return clientKey(ip.Unmap())
		}
	}
	return c.RemoteAddr().String()
}

// limitedConn releases its place in the bounds when closed. A
// connection whose write timed out (a client cut for reading too
// slowly) is reset when closed: what the kernel still holds for it is
// dropped rather than sent on at the client's pace.
type limitedConn struct {
	net.Conn
	l        *limitListener // nil: no bounds
	client   string
	once     sync.Once
	timedOut atomic.Bool
}

func (c *limitedConn) Close() error {
	if c.timedOut.Load() {
		if tc, ok := c.Conn.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
	}
	err := c.Conn.Close()
	if c.l != nil {
		c.once.Do(func() { c.l.release(c.client) })
	}
	return err
}

func (c *limitedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.noteTimeout(err)
	return n, err
}

// ReadFrom keeps sendfile(2) and splice(2) for the server's responses.
func (c *limitedConn) ReadFrom(r io.Reader) (int64, error) {
	var n int64
	var err error
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(writerOnly{c.Conn}, r)
	}
	c.noteTimeout(err)
	return n, err
}

func (c *limitedConn) noteTimeout(err error) {
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		c.timedOut.Store(true)
	}
}

// CloseWrite lets the server end a connection gracefully.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
