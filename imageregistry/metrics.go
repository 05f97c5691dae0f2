package imageregistry

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixoci/nixoci/internal/serving"
)

// metrics are the registry's own metrics and its resolved counters,
// beside the shared ones in serving.Metrics:
//
//	nixoci_compositions_total{outcome}  counter    images composed (outcome ok, error)
//	nixoci_composition_seconds          histogram  time to compose an image
//	nixoci_layers_converted_total       counter    layers converted from NARs while composing
//	nixoci_layers_reused_total          counter    layers found already converted while composing
//	nixoci_compositions_refused_total   counter    compositions refused (503) because MaxCompositions were running
type metrics struct {
	route              *serving.Route
	cache              *serving.Cache
	composedOK, failed prometheus.Counter
	seconds            prometheus.Histogram
	converted, reused  prometheus.Counter
	busy               prometheus.Counter
}

func newMetrics(m *serving.Metrics) (*metrics, error) {
	compositions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nixoci_compositions_total", Help: "Images composed by the registry API, by outcome (ok, error).",
	}, []string{"outcome"})
	rm := &metrics{
		route:      m.Route("registry"),
		cache:      m.Cache("composed"),
		composedOK: compositions.WithLabelValues("ok"),
		failed:     compositions.WithLabelValues("error"),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "nixoci_composition_seconds", Help: "Time to compose an image, layer conversions included.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 8),
		}),
		converted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixoci_layers_converted_total", Help: "Layers converted from NARs while composing images.",
		}),
		reused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixoci_layers_reused_total", Help: "Layers found already converted while composing images.",
		}),
		busy: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixoci_compositions_refused_total", Help: "Compositions refused (503) because as many as allowed were running.",
		}),
	}
	return rm, m.Register(compositions, rm.seconds, rm.converted, rm.reused, rm.busy)
}
