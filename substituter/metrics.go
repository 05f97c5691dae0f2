package substituter

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixoci/nixoci/internal/serving"
)

// routes are the route labels of the binary-cache server's requests.
var routes = []string{"/nix-cache-info", "/healthz", "/metrics", "narinfo", "nar", "log", "realisation", "listing", "debuginfo", "other"}

// metrics are the binary-cache server's own metrics and its resolved
// counters, beside the shared ones in serving.Metrics:
//
//	nixoci_uploads_total{kind,outcome}  counter  upload requests (kind nar, narinfo, nix-cache-info, listing, log, realisation, debuginfo, other, any)
//	nixoci_cached_narinfos              gauge    narinfo lookups held in memory (found or not)
//	nixoci_nar_redirects_total          counter  NAR requests answered with the registry's redirect to its storage
type metrics struct {
	routes    map[string]*serving.Route
	narinfo   *serving.Op
	cache     *serving.Cache
	uploads   *prometheus.CounterVec
	redirects prometheus.Counter
}

func newMetrics(m *serving.Metrics, narinfos *serving.LRU[*pathEntry]) (*metrics, error) {
	sm := &metrics{
		routes:  map[string]*serving.Route{},
		narinfo: m.Op("narinfo"),
		cache:   m.Cache("narinfo"),
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixoci_uploads_total", Help: "Upload requests by kind and outcome.",
		}, []string{"kind", "outcome"}),
		redirects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixoci_nar_redirects_total", Help: "NAR requests answered with the registry's redirect to its storage (--redirect-blobs).",
		}),
	}
	for _, r := range routes {
		sm.routes[r] = m.Route(r)
	}
	cached := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "nixoci_cached_narinfos", Help: "Narinfo lookups held in memory (found or not).",
	}, func() float64 { return float64(narinfos.Len()) })
	return sm, m.Register(sm.uploads, cached, sm.redirects)
}

// route gives a request's route, from routeOf.
func (m *metrics) route(r *http.Request) *serving.Route { return m.routes[routeOf(r)] }

// countUpload counts an upload request of kind with its outcome.
func (s *Server) countUpload(kind, outcome string) {
	s.metrics.uploads.WithLabelValues(kind, outcome).Inc()
}
