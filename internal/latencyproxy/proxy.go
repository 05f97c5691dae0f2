// Package latencyproxy makes a registry on loopback behave like one far
// away: a reverse proxy that waits a fixed time before forwarding each
// request, as a round trip to a registry in another region would. It is
// for benchmarks and tests, in front of a real registry.
package latencyproxy

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards every request to its backend after Delay.
type Proxy struct {
	delay    time.Duration
	rp       *httputil.ReverseProxy
	requests atomic.Int64
	upload   atomic.Int64
	download atomic.Int64
	kinds    sync.Map // "METHOD kind" -> *atomic.Int64
}

// New makes a proxy to backend (e.g. "http://127.0.0.1:5000") that
// delays each request by delay before forwarding it.
func New(backend string, delay time.Duration) (*Proxy, error) {
	u, err := url.Parse(backend)
	if err != nil {
		return nil, err
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	// The registry's Location headers name it; rewrite nothing: clients
	// given a relative or proxied Location come back through us, and the
	// distribution registry answers with paths relative to its host,
	// which is ours as the client sees it.
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	rp.FlushInterval = -1
	return &Proxy{delay: delay, rp: rp}, nil
}

// StatsPath answers with the proxy's counters ("requests N",
// "upload-bytes N", "download-bytes N" (response bodies as sent), then "request METHOD KIND N" per method and kind of
// distribution API path: manifests, blobs, uploads, tags, referrers,
// other) instead of forwarding; it is no registry path.
const StatsPath = "/-/latencyproxy/stats"

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == StatsPath {
		fmt.Fprintf(w, "requests %d\nupload-bytes %d\ndownload-bytes %d\n", p.requests.Load(), p.upload.Load(), p.download.Load())
		var lines []string
		p.kinds.Range(func(k, v any) bool {
			lines = append(lines, fmt.Sprintf("request %s %d\n", k, v.(*atomic.Int64).Load()))
			return true
		})
		sort.Strings(lines)
		fmt.Fprint(w, strings.Join(lines, ""))
		return
	}
	p.requests.Add(1)
	n, _ := p.kinds.LoadOrStore(r.Method+" "+kindOf(r.URL.Path), new(atomic.Int64))
	n.(*atomic.Int64).Add(1)
	if r.ContentLength > 0 {
		p.upload.Add(r.ContentLength)
	}
	if p.delay > 0 {
		t := time.NewTimer(p.delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	p.rp.ServeHTTP(countingWriter{w, &p.download}, r)
}

// countingWriter counts the response body bytes written.
type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// Flush passes flushes on (the proxy streams).
func (c countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Requests is the number of requests received.
func (p *Proxy) Requests() int64 { return p.requests.Load() }

// UploadBytes is the sum of the request bodies' declared lengths.
func (p *Proxy) UploadBytes() int64 { return p.upload.Load() }

// kindOf names the distribution API path's kind.
func kindOf(path string) string {
	for _, k := range []struct{ infix, kind string }{
		{"/blobs/uploads/", "uploads"}, {"/manifests/", "manifests"}, {"/blobs/", "blobs"},
		{"/tags/list", "tags"}, {"/referrers/", "referrers"},
	} {
		if strings.Contains(path, k.infix) {
			return k.kind
		}
	}
	return "other"
}
