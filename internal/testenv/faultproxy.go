package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Kinds of fault a FaultProxy injects, as keys of Counts and values of
// ProxyRequest.Fault.
const (
	FaultReset = "reset" // connection aborted mid-body
	Fault500   = "500"   // 500 Internal Server Error, upstream not contacted
	Fault503   = "503"   // 503 Service Unavailable, upstream not contacted
	Fault429   = "429"   // 429 Too Many Requests with Retry-After: 1
	FaultStall = "stall" // nothing sent for StallFor, then the connection aborted
	FaultCut   = "cut"   // upload body cut short on its way to the registry
)

// FaultOptions configure StartFaultProxy. The zero value forwards every
// request unchanged (a counting proxy).
type FaultOptions struct {
	// Seed seeds the math/rand source that picks faults. The same seed
	// gives the same sequence of decisions; which request gets which
	// decision still depends on the order requests arrive in.
	Seed int64
	// Probabilities, per request, of each kind of fault. They are tried
	// in this order against one uniform draw, so their sum should be at
	// most 1.
	//
	// Reset: for GET (and other methods without a request body), the
	// upstream's status, headers and the first half of its body are sent,
	// then the connection is aborted; a HEAD, or a response without a
	// known non-empty length, is aborted before anything is sent. For
	// PUT, PATCH and POST, the first half of the request body is read
	// (upstream is not contacted) and the connection is aborted.
	Reset float64
	// Status500 and Status503 answer with that status and a registry-style
	// JSON error body, without contacting upstream.
	Status500, Status503 float64
	// TooMany answers 429 with Retry-After: 1, without contacting upstream.
	TooMany float64
	// Stall sends nothing (and reads no request body) for StallFor, or
	// until the client goes away, then aborts the connection.
	Stall float64
	// Cut, for PUT, PATCH and POST with a body, forwards the request with
	// only the first half of its body, then aborts both connections: the
	// registry receives (and may store) part of the body, as when a
	// connection drops mid-upload. Other requests are forwarded.
	Cut float64
	// StallFor is how long a stall lasts; default 10s.
	StallFor time.Duration
	// MaxConsecutive bounds how many requests in a row with the same key
	// are faulted, so that retries eventually pass: the request after
	// MaxConsecutive faulted ones is forwarded. The key is the method and
	// path; for blob upload sessions (.../blobs/uploads/<id>) the session
	// id is replaced by the digest query parameter, since a retried upload
	// opens a new session. Default 2; negative means no bound.
	MaxConsecutive int
	// Only, if set, chooses which requests may be faulted; the others are
	// always forwarded. It must not read the request body.
	Only func(*http.Request) bool
	// Rewrite, if set, may change each response forwarded from upstream
	// (a hostile registry: other manifests, other annotations, other
	// tag lists). It reads and replaces resp.Body as it likes; the proxy
	// sets Content-Length from what it returns. A change of manifest
	// should come with the new Docker-Content-Digest.
	Rewrite func(r *http.Request, resp *http.Response) error
}

// ProxyRequest records one request a FaultProxy saw.
type ProxyRequest struct {
	Method   string
	Path     string // URL path as received
	RawQuery string
	Fault    string // "" if forwarded unchanged, else one of the Fault* kinds
	Status   int    // status sent to the client (0 if none was)
	Location string // Location header of the response, if any
	// BodyBytes counts the request body bytes read from the client
	// (half of them for a reset upload, all when forwarded).
	BodyBytes int64
	Duration  time.Duration
	Finished  bool // false while the proxy is still answering it
}

// Digest returns the request's digest query parameter (blob upload PUTs
// and monolithic POSTs carry one), or "".
func (r ProxyRequest) Digest() string {
	q, _ := url.ParseQuery(r.RawQuery)
	return q.Get("digest")
}

// FaultProxy is a reverse proxy on 127.0.0.1 in front of a registry that
// injects faults (see FaultOptions). It keeps the client's Host header,
// so that the Location URLs the registry builds point back at the proxy
// and upload sessions go through it too.
type FaultProxy struct {
	Addr     string // "127.0.0.1:PORT"
	Upstream string // host:port of the registry

	opts   FaultOptions
	proxy  *httputil.ReverseProxy
	srv    *http.Server
	closed chan struct{}

	mu          sync.Mutex
	rnd         *rand.Rand
	consecutive map[string]int
	counts      map[string]int
	requests    int
	log         []ProxyRequest
}

// StartFaultProxy starts a FaultProxy for upstream ("host:port", spoken
// to over plain HTTP) on a free 127.0.0.1 port. t.Cleanup stops it.
func StartFaultProxy(t testing.TB, upstream string, opts FaultOptions) *FaultProxy {
	t.Helper()
	if opts.MaxConsecutive == 0 {
		opts.MaxConsecutive = 2
	}
	if opts.StallFor <= 0 {
		opts.StallFor = 10 * time.Second
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("StartFaultProxy: %v", err)
	}
	p := &FaultProxy{
		Addr:        ln.Addr().String(),
		Upstream:    upstream,
		opts:        opts,
		closed:      make(chan struct{}),
		rnd:         rand.New(rand.NewSource(opts.Seed)),
		consecutive: map[string]int{},
		counts:      map[string]int{},
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		DisableCompression:  true,
	}
	p.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = upstream
			pr.Out.Host = pr.In.Host // the registry builds Location URLs from it
		},
		Transport: tr,
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	if opts.Rewrite != nil {
		p.proxy.ModifyResponse = func(resp *http.Response) error {
			if err := opts.Rewrite(resp.Request, resp); err != nil {
				return err
			}
			if resp.ContentLength >= 0 {
				resp.Header.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
			}
			return nil
		}
	}
	p.srv = &http.Server{
		Handler:  http.HandlerFunc(p.serve),
		ErrorLog: log.New(io.Discard, "", 0), // aborted handlers are expected
	}
	go p.srv.Serve(ln)
	t.Cleanup(func() {
		close(p.closed)
		p.srv.Close()
		tr.CloseIdleConnections()
	})
	return p
}

// Ref returns "127.0.0.1:PORT/" + repo: the repository through the proxy.
func (p *FaultProxy) Ref(repo string) string { return p.Addr + "/" + repo }

// URL returns "http://127.0.0.1:PORT".
func (p *FaultProxy) URL() string { return "http://" + p.Addr }

// Counts returns how many faults of each kind were injected so far (kinds
// never injected are absent).
func (p *FaultProxy) Counts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[string]int, len(p.counts))
	for k, v := range p.counts {
		m[k] = v
	}
	return m
}

// Faults returns the total number of faults injected so far.
func (p *FaultProxy) Faults() int {
	n := 0
	for _, v := range p.Counts() {
		n += v
	}
	return n
}

// Requests returns how many requests the proxy received so far, faulted
// or not.
func (p *FaultProxy) Requests() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.requests
}

// Log returns a copy of the record of every request received so far, in
// the order they arrived (a request still being answered has Finished
// false).
func (p *FaultProxy) Log() []ProxyRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]ProxyRequest(nil), p.log...)
}

// FormatCounts renders counts as "reset=3 500=1 ..." in a fixed order,
// with the total first.
func FormatCounts(c map[string]int) string {
	total := 0
	for _, v := range c {
		total += v
	}
	var b strings.Builder
	fmt.Fprintf(&b, "total=%d", total)
	for _, k := range []string{FaultReset, Fault500, Fault503, Fault429, FaultStall, FaultCut} {
		fmt.Fprintf(&b, " %s=%d", k, c[k])
	}
	return b.String()
}

// faultKey is the key MaxConsecutive counts by.
func faultKey(r *http.Request) string {
	path := r.URL.Path
	if i := strings.Index(path, "/blobs/uploads/"); i >= 0 && len(path) > i+len("/blobs/uploads/") {
		path = path[:i+len("/blobs/uploads/")] + "<session>?digest=" + r.URL.Query().Get("digest")
	}
	return r.Method + " " + path
}

// decide picks the fault for r ("" for none), counts it and logs r in
// arrival order; it returns r's index in the log.
func (p *FaultProxy) decide(r *http.Request) (string, int) {
	eligible := p.opts.Only == nil || p.opts.Only(r)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests++
	x := p.rnd.Float64()
	kind := ""
	if eligible {
		kind = p.pick(r, x)
	}
	p.log = append(p.log, ProxyRequest{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Fault: kind})
	return kind, len(p.log) - 1
}

// pick turns the random draw x into a fault kind for r, honouring
// MaxConsecutive; p.mu is held.
func (p *FaultProxy) pick(r *http.Request, x float64) string {
	kind := ""
	acc := 0.0
	for _, c := range []struct {
		kind string
		p    float64
	}{
		{FaultReset, p.opts.Reset}, {Fault500, p.opts.Status500}, {Fault503, p.opts.Status503},
		{Fault429, p.opts.TooMany}, {FaultStall, p.opts.Stall}, {FaultCut, p.opts.Cut},
	} {
		acc += c.p
		if c.p > 0 && x < acc {
			kind = c.kind
			break
		}
	}
	key := faultKey(r)
	if kind == "" || p.opts.MaxConsecutive > 0 && p.consecutive[key] >= p.opts.MaxConsecutive {
		delete(p.consecutive, key)
		return ""
	}
	p.consecutive[key]++
	p.counts[kind]++
	return kind
}

// finish completes the log entry i with what was sent and read.
func (p *FaultProxy) finish(i int, w *statusWriter, body *countingBody, start time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rec := &p.log[i]
	rec.Status, rec.Location, rec.Duration = w.status, w.Header().Get("Location"), time.Since(start)
	rec.BodyBytes = body.n.Load()
	rec.Finished = true
}

// countingBody counts what is read of a request body.
type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (p *FaultProxy) serve(rw http.ResponseWriter, r *http.Request) {
	start := time.Now()
	fault, i := p.decide(r)
	w := &statusWriter{ResponseWriter: rw}
	body := &countingBody{ReadCloser: r.Body}
	r.Body = body
	defer p.finish(i, w, body, start) // runs on panics too
	switch fault {
	case "":
		p.proxy.ServeHTTP(w, r)
	case Fault500, Fault503, Fault429:
		status, code := http.StatusInternalServerError, "UNKNOWN"
		switch fault {
		case Fault503:
			status, code = http.StatusServiceUnavailable, "UNAVAILABLE"
		case Fault429:
			status, code = http.StatusTooManyRequests, "TOOMANYREQUESTS"
			w.Header().Set("Retry-After", "1")
		}
		body := fmt.Sprintf(`{"errors":[{"code":%q,"message":"injected fault (nixoci fault proxy)"}]}`+"\n", code)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(status)
		io.WriteString(w, body)
	case FaultCut:
		if r.ContentLength <= 0 {
			p.proxy.ServeHTTP(w, r)
			return
		}
		r.Body = &cutBody{ReadCloser: r.Body, left: r.ContentLength / 2}
		p.proxy.ServeHTTP(discardWriter{http.Header{}}, r)
		panic(http.ErrAbortHandler)
	case FaultStall:
		timer := time.NewTimer(p.opts.StallFor)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-r.Context().Done():
		case <-p.closed:
		}
		panic(http.ErrAbortHandler)
	case FaultReset:
		switch r.Method {
		case http.MethodPut, http.MethodPatch, http.MethodPost:
			n := r.ContentLength / 2
			if r.ContentLength < 0 {
				n = 32 << 10
			}
			if n > 0 {
				io.CopyN(io.Discard, r.Body, n)
			}
			panic(http.ErrAbortHandler)
		default:
			cw := &cutWriter{statusWriter: w, method: r.Method}
			p.proxy.ServeHTTP(cw, r)
			// The whole (empty) body went through without a Write: abort
			// now, after the headers if they were sent.
			cw.abort()
		}
	}
}

// statusWriter remembers the status sent.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// cutWriter passes on the status, the headers and the first half of the
// body (by Content-Length), then aborts the connection.
type cutWriter struct {
	*statusWriter
	method     string
	headerSent bool
	limit, n   int64
}

func (w *cutWriter) WriteHeader(code int) {
	if w.headerSent {
		return
	}
	cl, err := strconv.ParseInt(w.Header().Get("Content-Length"), 10, 64)
	if w.method == http.MethodHead || err != nil || cl <= 0 {
		// Nothing worth cutting in half: abort before anything is sent.
		panic(http.ErrAbortHandler)
	}
	w.limit = cl / 2
	w.headerSent = true
	w.statusWriter.WriteHeader(code)
}

func (w *cutWriter) Write(b []byte) (int, error) {
	if !w.headerSent {
		w.WriteHeader(http.StatusOK)
	}
	room := w.limit - w.n
	if int64(len(b)) < room {
		n, err := w.statusWriter.Write(b)
		w.n += int64(n)
		return n, err
	}
	if room > 0 {
		w.statusWriter.Write(b[:room])
		w.n += room
	}
	w.abort()
	return 0, errors.New("unreachable")
}

func (w *cutWriter) Flush() {} // keep the cut where it is

// abort flushes what was written and drops the connection.
func (w *cutWriter) abort() {
	if w.headerSent {
		w.statusWriter.Flush()
	}
	panic(http.ErrAbortHandler)
}

// cutBody ends a request body with an error after left bytes, so that
// the transport forwarding it aborts the upstream request mid-body.
type cutBody struct {
	io.ReadCloser
	left int64
}

func (b *cutBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errors.New("body cut by the fault proxy")
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

// discardWriter swallows the response to a cut request: the client gets
// a broken connection instead.
type discardWriter struct{ h http.Header }

func (w discardWriter) Header() http.Header       { return w.h.Clone() }
func (discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (discardWriter) WriteHeader(int)             {}

// ReplaceBody makes data the body of resp (for FaultOptions.Rewrite).
func ReplaceBody(resp *http.Response, data []byte) {
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(data))
	resp.ContentLength = int64(len(data))
}
