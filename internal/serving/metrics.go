package serving

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are what /metrics shows for one listener: a Prometheus registry
// of its own (not the global one) with the Go and process collectors and
// these metrics, shared by the handlers on the listener:
//
//	nixoci_requests_total{route,method,status}  counter    HTTP requests
//	nixoci_request_seconds{route}               histogram  time to answer, body included
//	nixoci_response_bytes_total{route}          counter    response body bytes
//	nixoci_inflight_requests                    gauge      requests being served
//	nixoci_backend_requests_total{op,outcome}   counter    backend operations (outcome ok, not_found, error)
//	nixoci_backend_seconds{op}                  histogram  time of backend operations
//	nixoci_cache_total{cache,result}            counter    in-memory cache lookups (result hit, miss)
//	nixoci_corrupt_blobs_total                  counter    blobs whose content did not match their digest
//	nixoci_blob_sendfile_total                  counter    blobs sent straight from a file verified before
//	nixoci_connections                          gauge      connections open (within Limits)
//	nixoci_connections_refused_total{reason}    counter    connections answered 503 past a bound (max_connections, client_connections)
//	nixoci_slow_bodies_cut_total{direction}     counter    bodies cut for falling behind the minimum rate (request, response)
//
// Handlers add their own with Register (uploads, compositions). Label
// values come from small fixed sets; the counters of a route, backend
// operation or cache are resolved once (Route, Op, Cache), so counting a
// request allocates nothing.
type Metrics struct {
	reg             *prometheus.Registry
	requests        *prometheus.CounterVec
	requestSeconds  *prometheus.HistogramVec
	responseBytes   *prometheus.CounterVec
	inflight        prometheus.Gauge
	backendRequests *prometheus.CounterVec
	backendSeconds  *prometheus.HistogramVec
	cache           *prometheus.CounterVec
	corrupt         prometheus.Counter
	sendfile        prometheus.Counter
	conns           prometheus.Gauge
	connsRefused    *prometheus.CounterVec
	bodiesCut       *prometheus.CounterVec
}

// latencyBuckets span 100µs (a narinfo from memory) to 26s (a slow
// registry), by factors of 4.
var latencyBuckets = prometheus.ExponentialBuckets(0.0001, 4, 10)

// NewMetrics makes Metrics with a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixoci_requests_total", Help: "HTTP requests by route, method and status.",
		}, []string{"route", "method", "status"}),
		requestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nixoci_request_seconds", Help: "Time to answer HTTP requests, body included, by route.", Buckets: latencyBuckets,
		}, []string{"route"}),
		responseBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixoci_response_bytes_total", Help: "Response body bytes by route.",
		}, []string{"route"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nixoci_inflight_requests", Help: "Requests being served.",
		}),
		backendRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixoci_backend_requests_total", Help: "Backend operations by operation and outcome (ok, not_found, error).",
		}, []string{"op", "outcome"}),
		backendSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nixoci_backend_seconds", Help: "Time of backend operations, by operation.", Buckets: latencyBuckets,
		}, []string{"op"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixoci_cache_total", Help: "In-memory cache lookups by cache and result (hit, miss).",
		}, []string{"cache", "result"}),
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixoci_corrupt_blobs_total", Help: "Blobs whose content did not match their digest while served.",
		}),
		sendfile: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixoci_blob_sendfile_total", Help: "Blob responses sent straight from a layout file verified whole before.",
		}),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nixoci_connections", Help: "Connections open.",
		}),
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixoci_connections_refused_total", Help: "Connections answered 503 past a bound on connections, by bound (max_connections, client_connections).",
		}, []string{"reason"}),
		bodiesCut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixoci_slow_bodies_cut_total", Help: "Request and response bodies cut for falling behind the minimum rate, by direction (request, response).",
		}, []string{"direction"}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.requestSeconds, m.responseBytes, m.inflight,
		m.backendRequests, m.backendSeconds, m.cache, m.corrupt, m.sendfile,
		m.conns, m.connsRefused, m.bodiesCut,
	)
	return m
}

// Register adds a handler's own metrics.
func (m *Metrics) Register(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Route counts the requests of one route.
type Route struct {
	name    string
	m       *Metrics
	bytes   prometheus.Counter
	seconds prometheus.Observer
	// counts[method][statusIndex], resolved on first use: the set is
	// bounded, but most combinations never happen and are not shown.
	counts [len(methods)][len(statuses)]atomic.Pointer[counter]
}

type counter struct{ prometheus.Counter }

// methods are the method labels; any other method counts as "other".
var methods = [...]string{http.MethodGet, http.MethodHead, http.MethodPut, "other"}

// statuses are the statuses nixoci's handlers answer with; others are
// counted too, only more slowly.
var statuses = [...]int{200, 201, 204, 206, 301, 304, 307, 308, 400, 401, 403, 404, 405, 409, 413, 416, 431, 500, 502, 503, 504}

func methodIndex(m string) int {
	switch m {
	case http.MethodGet:
		return 0
	case http.MethodHead:
		return 1
	case http.MethodPut:
		return 2
	}
	return 3
}

// statusIndex is the index of each status in statuses, or -1.
var statusIndex = func() (idx [600]int8) {
	for i := range idx {
		idx[i] = -1
	}
	for i, s := range statuses {
		idx[s] = int8(i)
	}
	return idx
}()

// Route resolves the counters of the route name.
func (m *Metrics) Route(name string) *Route {
	return &Route{name: name, m: m, bytes: m.responseBytes.WithLabelValues(name), seconds: m.requestSeconds.WithLabelValues(name)}
}

// observe counts one request answered with status and n body bytes in d.
func (r *Route) observe(method string, status int, n int64, d time.Duration) {
	r.bytes.Add(float64(n))
	r.seconds.Observe(d.Seconds())
	mi := methodIndex(method)
	if status < 0 || status >= len(statusIndex) || statusIndex[status] < 0 {
		r.m.requests.WithLabelValues(r.name, methods[mi], strconv.Itoa(status)).Inc()
		return
	}
	slot := &r.counts[mi][statusIndex[status]]
	c := slot.Load()
	if c == nil {
		c = &counter{r.m.requests.WithLabelValues(r.name, methods[mi], strconv.Itoa(status))}
		slot.Store(c)
	}
	c.Inc()
}

// Op counts one kind of backend operation.
type Op struct {
	ok, notFound, failed prometheus.Counter
	seconds              prometheus.Observer
}

// Op resolves the counters of the backend operation name.
func (m *Metrics) Op(name string) *Op {
	return &Op{
		ok:       m.backendRequests.WithLabelValues(name, "ok"),
		notFound: m.backendRequests.WithLabelValues(name, "not_found"),
		failed:   m.backendRequests.WithLabelValues(name, "error"),
		seconds:  m.backendSeconds.WithLabelValues(name),
	}
}

// Observe records one operation that began at start and ended with err.
func (o *Op) Observe(start time.Time, err error) {
	o.seconds.Observe(time.Since(start).Seconds())
	switch {
	case err == nil:
		o.ok.Inc()
	case IsNotFound(err):
		o.notFound.Inc()
	default:
		o.failed.Inc()
	}
}

// Cache counts the lookups of one in-memory cache.
type Cache struct{ hit, miss prometheus.Counter }

// Cache resolves the counters of the cache name.
func (m *Metrics) Cache(name string) *Cache {
	return &Cache{hit: m.cache.WithLabelValues(name, "hit"), miss: m.cache.WithLabelValues(name, "miss")}
}

// Count counts one lookup.
func (c *Cache) Count(hit bool) {
	if hit {
		c.hit.Inc()
	} else {
		c.miss.Inc()
	}
}
