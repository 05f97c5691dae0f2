package serving

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// Limits bound what clients can hold of a server: its goroutines, file
// descriptors and backend bodies. Zero values mean the documented
// defaults; a negative value turns a limit off.
//
// Every limit is chosen far from what Nix, docker, containerd or crane
// need: Nix opens up to 25 connections (http-connections) and keeps them
// idle between requests; a NAR is read as fast as the network and the
// client's decompression allow, never slower than MinBodyRate for long.
type Limits struct {
	// HeaderTimeout bounds the time to send a request's headers;
	// default 10s. A client sending them byte by byte (slowloris) holds
	// a connection no longer.
	HeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long; default
	// 2 minutes.
	IdleTimeout time.Duration
	// MinBodyRate (bytes per second) and BodyTimeout bound slow bodies:
	// a response body the client reads, or a request body it sends, that
	// falls BodyTimeout behind MinBodyRate is cut and its connection
	// closed. Only the time spent waiting on the client counts (not the
	// time waiting on a backend), and a transfer that keeps up earns
	// back up to BodyTimeout of slack, so a large NAR read at any
	// reasonable pace, or with pauses shorter than BodyTimeout, is never
	// cut. Defaults 1024 bytes/s and 60s.
	MinBodyRate int64
	BodyTimeout time.Duration
	// MaxConnections bounds the connections open at once; default 4096.
	// A connection past it is answered 503 with Retry-After and closed
	// before its request is read.
	MaxConnections int
	// MaxClientConnections bounds the connections open at once from one
	// IP address (IPv6: one /64); default 256. Past it, as past
	// MaxConnections. Behind a reverse proxy every connection comes from
	// the proxy: raise it to MaxConnections, or turn it off.
	MaxClientConnections int
	// MaxStreams bounds the requests one HTTP/2 connection (over TLS)
	// has in flight at once; default 100, what curl, and so Nix, opens
	// on one connection at most. A client's requests in flight are then
	// at most MaxClientConnections × MaxStreams.
	MaxStreams int
}

// Defaults of Limits.
const (
	DefaultHeaderTimeout        = 10 * time.Second
	DefaultIdleTimeout          = 2 * time.Minute
	DefaultMinBodyRate          = 1024
	DefaultBodyTimeout          = time.Minute
	DefaultMaxConnections       = 4096
	DefaultMaxClientConnections = 256
	DefaultMaxStreams           = 100
)

// RetryAfter is the Retry-After of a connection refused for the bounds
// on connections, in seconds.
const RetryAfter = 1

// ErrSlowClient: a body was cut because the client fell BodyTimeout
// behind MinBodyRate.
var ErrSlowClient = errors.New("client too slow")

// withDefaults returns l with zero values replaced by the defaults and
// negative ones by 0 (off).
func (l Limits) withDefaults() Limits {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		} else if *v < 0 {
			*v = 0
		}
	}
	defInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		} else if *v < 0 {
			*v = 0
		}
	}
	def(&l.HeaderTimeout, DefaultHeaderTimeout)
	def(&l.IdleTimeout, DefaultIdleTimeout)
	def(&l.BodyTimeout, DefaultBodyTimeout)
	if l.MinBodyRate == 0 {
		l.MinBodyRate = DefaultMinBodyRate
	} else if l.MinBodyRate < 0 {
		l.MinBodyRate = 0
	}
	defInt(&l.MaxConnections, DefaultMaxConnections)
	defInt(&l.MaxClientConnections, DefaultMaxClientConnections)
	if l.MaxStreams <= 0 { // HTTP/2 has no "unbounded"
		l.MaxStreams = DefaultMaxStreams
	}
	return l
}

// Server returns an http.Server serving h within l's header and idle
// timeouts, the minimum rate of request bodies and, over HTTP/2, of
// each stream's response and MaxStreams, counting into m and logging to
// log (nil: slog.Default()). Serve it on l.Listener or l.TLSListener,
// which bound connections and pace what is written to them.
func (l Limits) Server(h http.Handler, m *Metrics, log *slog.Logger) *http.Server {
	if log == nil {
		log = slog.Default()
	}
	l = l.withDefaults()
	if l.MinBodyRate > 0 && l.BodyTimeout > 0 {
		h = &bodyPacer{next: h, pace: newPace(l.MinBodyRate, l.BodyTimeout), rate: l.MinBodyRate,
			chunk: chunkOf(l.MinBodyRate, l.BodyTimeout), metrics: m, log: log}
	}
	return &http.Server{
		Handler: h,
		// Over TLS this also bounds the handshake (net/http takes the
		// least of its timeouts for it).
		ReadHeaderTimeout: l.HeaderTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: l.MaxStreams},
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// String describes l for the startup log.
func (l Limits) String() string {
	l = l.withDefaults()
	or := func(v any, zero bool) string {
		if zero {
			return "none"
		}
		return fmt.Sprint(v)
	}
	return fmt.Sprintf("header timeout %s, idle timeout %s, body rate at least %s bytes/s within %s, connections %s, per client %s, HTTP/2 streams per connection %d",
		or(l.HeaderTimeout, l.HeaderTimeout == 0), or(l.IdleTimeout, l.IdleTimeout == 0),
		or(l.MinBodyRate, l.MinBodyRate == 0 || l.BodyTimeout == 0), or(l.BodyTimeout, l.BodyTimeout == 0),
		or(l.MaxConnections, l.MaxConnections == 0), or(l.MaxClientConnections, l.MaxClientConnections == 0), l.MaxStreams)
}
