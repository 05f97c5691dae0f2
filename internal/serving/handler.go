package serving

import (
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"
)

// HandlerOptions configure Handler. Metrics and Route are required.
type HandlerOptions struct {
	Metrics *Metrics
	// Route gives a request's route for metrics, one of a small fixed
	// set resolved with Metrics.Route.
	Route func(*http.Request) *Route
	// Logger receives error logs, 5xx answers included; default
	// slog.Default().
	Logger *slog.Logger
	// AccessLog logs every request that is not a 5xx, one line each, to
	// AccessLogTo; 5xx answers are logged through Logger in any case.
	AccessLog bool
	// AccessLogTo receives the access log; default one of the Handler's
	// own writing to os.Stderr (where slog's default handler writes too),
	// written out at Close. Handlers on one listener share one.
	AccessLogTo *AccessLog
	// BadPath answers a request whose path has escapes, empty or dot
	// segments; default a plain-text 400.
	BadPath func(http.ResponseWriter)
}

// Handler wraps a server's routes with what every server of nixoci does
// to a request: it refuses paths no valid request has before they reach
// them (and a backend), and counts and logs each request. Headers are
// never logged: they may carry credentials.
type Handler struct {
	next      http.Handler
	opts      HandlerOptions
	accessLog *AccessLog // nil: none
	ownLog    *AccessLog // the default AccessLogTo, closed by Close
}

// NewHandler wraps next.
func NewHandler(next http.Handler, opts HandlerOptions) *Handler {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.BadPath == nil {
		opts.BadPath = func(w http.ResponseWriter) { http.Error(w, "bad path", http.StatusBadRequest) }
	}
	h := &Handler{next: next, opts: opts}
	switch {
	case !opts.AccessLog:
	case opts.AccessLogTo != nil:
		h.accessLog = opts.AccessLogTo
	default:
		h.ownLog = NewAccessLog(os.Stderr)
		h.accessLog = h.ownLog
	}
	return h
}

// Close writes out the access log if the Handler made it (AccessLog
// without AccessLogTo); requests served after Close are logged at once.
func (h *Handler) Close() error {
	if h.ownLog == nil {
		return nil
	}
	return h.ownLog.Close()
}

// Failed logs that the backend work for what failed with err, and
// returns the status to answer with (StatusOf). Error texts are for the
// log: a client is told what failed, not why.
func (h *Handler) Failed(what string, err error) int {
	status := StatusOf(err)
	h.opts.Logger.Error("backend failure", "what", what, "status", status, "err", err)
	return status
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	m := h.opts.Metrics
	m.inflight.Inc()
	defer m.inflight.Dec()
	rw := &recorder{ResponseWriter: w, status: http.StatusOK}
	route := h.opts.Route(r)
	defer func() {
		d := time.Since(start)
		route.observe(r.Method, rw.status, rw.bytes, d)
		switch {
		case rw.status >= 500:
			h.opts.Logger.Error("request", "method", r.Method, "path", r.URL.EscapedPath(),
				"status", rw.status, "bytes", rw.bytes, "duration", d.Round(time.Microsecond), "remote", r.RemoteAddr)
		case h.accessLog != nil:
			h.accessLog.log(r, rw.status, rw.bytes, start, d)
		}
	}()
	// Every valid path is plain ASCII without escapes or dot segments;
	// refuse anything else before it reaches a backend. Only the path is
	// judged: a query's parameters may be percent-encoded (tags/list's
	// last, the referrers API's artifactType).
	rawPath, _, _ := strings.Cut(r.RequestURI, "?")
	if strings.Contains(rawPath, "%") || strings.Contains(r.URL.Path, "..") || strings.Contains(r.URL.Path, "//") {
		h.opts.BadPath(rw)
		return
	}
	h.next.ServeHTTP(rw, r)
}

// recorder captures the status and body size of a response.
type recorder struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// ReadFrom keeps sendfile(2) working for files served through recorder.
func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	r.wroteHeader = true
	n, err := io.Copy(r.ResponseWriter, src)
	r.bytes += n
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
