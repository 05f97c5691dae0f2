package serving

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
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

// watchEvery is how often the writes of paced connections are judged:
// the resolution of their clock.
const watchEvery = 100 * time.Millisecond

// Listener returns ln within l's bounds on connections
// (MaxConnections, MaxClientConnections) and pacing the responses
// written to its connections (MinBodyRate, BodyTimeout), counting into
// m and logging cuts to log (nil: slog.Default()). Serve l.Server on it.
// Close it to stop its watch on slow clients.
func (l Limits) Listener(ln net.Listener, m *Metrics, log *slog.Logger) net.Listener {
	return l.newListener(ln, nil, m, log)
}

// TLSListener is Listener over TLS with cfg: its connections are
// *tls.Conn (so that the server offers HTTP/2 to those that ask for it),
// paced and counted by what they send and receive encrypted, and those
// past the bounds are answered 503 over TLS (HTTP/1.1) before they are
// closed.
func (l Limits) TLSListener(ln net.Listener, cfg *tls.Config, m *Metrics, log *slog.Logger) net.Listener {
	return l.newListener(ln, cfg, m, log)
}

func (l Limits) newListener(ln net.Listener, cfg *tls.Config, m *Metrics, log *slog.Logger) net.Listener {
	if log == nil {
		log = slog.Default()
	}
	l = l.withDefaults()
	ll := &limitListener{
		Listener: ln, max: l.MaxConnections, perClient: l.MaxClientConnections,
		clients: map[string]int{}, refusing: make(chan struct{}, maxRefusing), metrics: m, log: log,
		conns: map[*limitedConn]struct{}{}, done: make(chan struct{}),
	}
	if cfg != nil {
		ll.tls = cfg
		// A refused client gets its 503 in HTTP/1.1, which every
		// client reads; no HTTP/2 connection is set up for one answer.
		ll.refuseTLS = cfg.Clone()
		ll.refuseTLS.NextProtos = []string{"http/1.1"}
	}
	if l.MinBodyRate > 0 && l.BodyTimeout > 0 {
		ll.pace = newPace(l.MinBodyRate, l.BodyTimeout)
		ll.rate = l.MinBodyRate
		ll.chunk = int64(chunkOf(l.MinBodyRate, l.BodyTimeout))
		ll.base = time.Now().Add(-time.Nanosecond) // the clock is never 0
		ll.clock.Store(int64(time.Since(ll.base)))
		go ll.watch()
	}
	return ll
}

type limitListener struct {
	net.Listener
	max, perClient int // 0: no bound
	metrics        *Metrics
	log            *slog.Logger
	refusing       chan struct{}

	// TLS, if served over it (nil: plain HTTP), and as refusals use it.
	tls, refuseTLS *tls.Config

	// Response pacing; chunk 0: off.
	pace  pace
	rate  int64
	chunk int64
	base  time.Time
	clock atomic.Int64 // time since base, moved every watchEvery: cheaper than time.Now

	mu      sync.Mutex
	open    int
	clients map[string]int // client key -> connections open
	conns   map[*limitedConn]struct{}
	closed  bool
	done    chan struct{}
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
		if reason := l.admit(client); reason != "" {
			l.metrics.connsRefused.WithLabelValues(reason).Inc()
			l.refuse(c)
			continue
		}
		l.metrics.conns.Inc()
		lc := &limitedConn{Conn: c, l: l, client: client, slack: l.pace.window}
		if l.chunk > 0 {
			l.mu.Lock()
			l.conns[lc] = struct{}{}
			l.mu.Unlock()
		}
		if l.tls != nil {
			// The handshake runs in the server's goroutine for the
			// connection, within its header timeout.
			return tls.Server(lc, l.tls), nil
		}
		return lc, nil
	}
}

// Close stops the listener and the watch on its connections' writes.
func (l *limitListener) Close() error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.done)
	}
	l.mu.Unlock()
	return l.Listener.Close()
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

func (l *limitListener) release(c *limitedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.clients[c.client]--; l.clients[c.client] <= 0 {
		delete(l.clients, c.client)
	}
	delete(l.conns, c)
	l.metrics.conns.Dec()
}

// refuse answers c 503 and closes it: after the answer, its write side
// first, then, once the client has closed or a second has passed, the
// whole (closing at once with its request unread would reset the
// connection, and the client might never read the answer). Over TLS the
// answer needs a handshake first, made in the background within the
// same second; past maxRefusing at once, such a client is closed at
// once, unanswered.
func (l *limitListener) refuse(c net.Conn) {
	c.SetDeadline(time.Now().Add(time.Second))
	if l.tls == nil {
		if _, err := c.Write(busyResponse); err != nil {
			c.Close()
			return
		}
	}
	select {
	case l.refusing <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-l.refusing }()
		conn := c
		if l.tls != nil {
			tc := tls.Server(c, l.refuseTLS)
			if err := tc.Handshake(); err != nil {
				c.Close()
				return
			}
			if _, err := tc.Write(busyResponse); err != nil {
				c.Close()
				return
			}
			conn = tc
		}
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		io.Copy(io.Discard, io.LimitReader(conn, 64<<10))
		c.Close()
	}()
}

// watch moves the clock and cuts the connections whose write in
// progress has fallen behind the minimum rate, until the listener is
// closed.
func (l *limitListener) watch() {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	var slow []*limitedConn
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
		}
		now := int64(time.Since(l.base))
		l.clock.Store(now)
		slow = slow[:0]
		l.mu.Lock()
		for c := range l.conns {
			if c.behind(now) {
				slow = append(slow, c)
			}
		}
		l.mu.Unlock()
		for _, c := range slow {
			c.cut()
		}
	}
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

// limitedConn is a connection counted in the listener's bounds until it
// is closed, whose writes are paced: each is judged while it waits on
// the client (by the listener's watch), and one that falls BodyTimeout
// behind the minimum rate is cut. A cut connection is reset when
// closed: what the kernel still holds for it is dropped rather than sent
// on at the client's pace.
type limitedConn struct {
	net.Conn
	l      *limitListener
	client string
	once   sync.Once

	// Pacing, on the listener's clock: when the write in progress falls
	// behind (0: none), read by the watch; and the connection's slack
	// (see pace), used by its writes only, which net/http makes one at a
	// time.
	behindAt atomic.Int64
	slack    time.Duration
	timedOut atomic.Bool
}

func (c *limitedConn) Close() error {
	if c.timedOut.Load() {
		if tc, ok := c.Conn.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
	}
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c) })
	return err
}

func (c *limitedConn) Write(b []byte) (int, error) {
	if c.l.chunk == 0 {
		n, err := c.Conn.Write(b)
		c.noteTimeout(err)
		return n, err
	}
	written := 0
	for len(b) > 0 {
		n := min(int64(len(b)), c.l.chunk)
		start := c.begin(n)
		m, err := c.Conn.Write(b[:n])
		c.end(start, int64(m))
		written += m
		b = b[m:]
		if err != nil {
			c.noteTimeout(err)
			return written, err
		}
	}
	return written, nil
}

// ReadFrom keeps sendfile(2) and splice(2) for the server's responses,
// in chunks when paced.
func (c *limitedConn) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := c.Conn.(io.ReaderFrom)
	if !ok {
		return io.Copy(writerOnly{c}, r)
	}
	if c.l.chunk == 0 {
		n, err := rf.ReadFrom(r)
		c.noteTimeout(err)
		return n, err
	}
	// One *io.LimitedReader over the source, as the kernel paths want it
	// (net/http passes a file as one).
	src, limit := r, int64(-1)
	outer, limited := r.(*io.LimitedReader)
	if limited {
		src, limit = outer.R, outer.N
	}
	var total int64
	for limit != 0 {
		n := c.l.chunk
		if limit > 0 {
			n = min(n, limit)
		}
		start := c.begin(n)
		m, err := rf.ReadFrom(&io.LimitedReader{R: src, N: n})
		c.end(start, m)
		total += m
		if limited {
			outer.N -= m
			limit -= m
		}
		if err != nil {
			c.noteTimeout(err)
			return total, err
		}
		if m < n { // the source ended
			return total, nil
		}
	}
	return total, nil
}

// begin notes a write of n bytes starting, and returns its start.
func (c *limitedConn) begin(n int64) int64 {
	start := c.l.clock.Load()
	c.behindAt.Store(start + int64(max(c.slack, 0)+c.l.pace.allowance(n)))
	return start
}

// end notes the write begun at start done, n bytes written.
func (c *limitedConn) end(start, n int64) {
	c.behindAt.Store(0)
	c.slack = c.l.pace.after(c.slack, n, time.Duration(c.l.clock.Load()-start))
}

// behind reports whether the write in progress has waited longer than
// the connection's slack and its own length at the minimum rate allow.
func (c *limitedConn) behind(now int64) bool {
	at := c.behindAt.Load()
	return at != 0 && now > at
}

// cut ends the write in progress with a timeout; the server then closes
// the connection.
func (c *limitedConn) cut() {
	if c.timedOut.Swap(true) {
		return
	}
	c.Conn.SetWriteDeadline(time.Unix(1, 0))
	c.l.metrics.bodiesCut.WithLabelValues("response").Inc()
	c.l.log.Warn("cut a client too slow reading a response", "remote", c.RemoteAddr().String(),
		"min_rate", c.l.rate, "timeout", c.l.pace.window)
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

// writerOnly hides a writer's ReadFrom, so that io.Copy uses Write.
type writerOnly struct{ io.Writer }
