package substituter

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixoci/nixoci/catalog"
)

// catalogMetrics count what the catalogs' refreshes cost the registries
// (SPEC.md section 5.3): operators see the steady-state load there.
type catalogMetrics struct {
	refreshes *prometheus.CounterVec
	seconds   prometheus.Histogram
	tags      *prometheus.GaugeVec
	read      prometheus.Counter
}

func newCatalogMetrics() *catalogMetrics {
	return &catalogMetrics{
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixoci_catalog_refreshes_total",
			Help: "Refreshes of the catalogs of closures (one per backend per --catalog-interval), by outcome: complete (every closure read), incomplete.",
		}, []string{"outcome"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "nixoci_catalog_refresh_seconds",
			Help:    "Wall time of one backend's catalog refresh: listing its tags, resolving those that may name closures, reading new closures.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120},
		}),
		tags: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nixoci_catalog_tags",
			Help: "Tags the last refresh of a backend's catalog listed (kind: all) and resolved (kind: named, one HEAD request each).",
		}, []string{"backend", "kind"}),
		read: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixoci_catalog_closures_read_total",
			Help: "Closures (and other manifests named by tags) the catalogs read: only digests they did not hold before.",
		}),
	}
}

func (m *catalogMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.refreshes, m.seconds, m.tags, m.read}
}

// observer records the refreshes of backend's catalog.
func (m *catalogMetrics) observer(backend string) func(catalog.Report) {
	return func(r catalog.Report) {
		outcome := "complete"
		if r.Err != nil {
			outcome = "incomplete"
		}
		m.refreshes.WithLabelValues(outcome).Inc()
		m.seconds.Observe(r.Took.Seconds())
		m.tags.WithLabelValues(backend, "all").Set(float64(r.Tags))
		m.tags.WithLabelValues(backend, "named").Set(float64(r.Named))
		m.read.Add(float64(r.Read))
	}
}
