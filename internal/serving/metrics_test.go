package serving

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"oras.land/oras-go/v2/errdef"
)

// scrapeFamilies reads m's exposition with the Prometheus text parser.
func scrapeFamilies(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatalf("exposition does not parse: %v\n%s", err, rec.Body)
	}
	for name, f := range families {
		if f.GetHelp() == "" || f.Type == nil {
			t.Errorf("%s has no HELP or TYPE", name)
		}
	}
	return families
}

// sample returns the metric of family name whose labels are exactly
// labels (name, value pairs), or nil.
func sample(families map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	f := families[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.Metric {
		if len(m.Label)*2 != len(labels) {
			continue
		}
		for i := 0; i < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				found = found || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
			}
			if !found {
				continue next
			}
		}
		return m
	}
	return nil
}

// TestMetricsExposition: the exposition parses, carries the Go and
// process collectors, and shows what Route, Op and Cache counted under
// the labels they were resolved with.
func TestMetricsExposition(t *testing.T) {
	m := NewMetrics()
	narinfo, other := m.Route("narinfo"), m.Route("other")
	op, cache := m.Op("narinfo"), m.Cache("narinfo")
	narinfo.observe(http.MethodGet, 200, 100, time.Millisecond)
	narinfo.observe(http.MethodGet, 200, 50, 2*time.Millisecond)
	narinfo.observe(http.MethodHead, 404, 0, time.Millisecond)
	other.observe("BREW", 418, 5, time.Millisecond) // neither a known method nor status
	start := time.Now()
	op.Observe(start, nil)
	op.Observe(start, errdef.ErrNotFound)
	op.Observe(start, errors.New("refused"))
	cache.Count(true)
	cache.Count(true)
	cache.Count(false)
	f := scrapeFamilies(t, m)
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if f[name] == nil {
			t.Errorf("no %s", name)
		}
	}
	counters := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"nixoci_requests_total", []string{"route", "narinfo", "method", "GET", "status", "200"}, 2},
		{"nixoci_requests_total", []string{"route", "narinfo", "method", "HEAD", "status", "404"}, 1},
		{"nixoci_requests_total", []string{"route", "other", "method", "other", "status", "418"}, 1},
		{"nixoci_response_bytes_total", []string{"route", "narinfo"}, 150},
		{"nixoci_backend_requests_total", []string{"op", "narinfo", "outcome", "ok"}, 1},
		{"nixoci_backend_requests_total", []string{"op", "narinfo", "outcome", "not_found"}, 1},
		{"nixoci_backend_requests_total", []string{"op", "narinfo", "outcome", "error"}, 1},
		{"nixoci_cache_total", []string{"cache", "narinfo", "result", "hit"}, 2},
		{"nixoci_cache_total", []string{"cache", "narinfo", "result", "miss"}, 1},
		{"nixoci_corrupt_blobs_total", nil, 0},
	}
	for _, c := range counters {
		s := sample(f, c.name, c.labels...)
		if s == nil || s.Counter == nil {
			t.Errorf("%s%q: no such counter", c.name, c.labels)
			continue
		}
		if got := s.Counter.GetValue(); got != c.want {
			t.Errorf("%s%q = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if s := sample(f, "nixoci_request_seconds", "route", "narinfo"); s == nil || s.Histogram == nil || s.Histogram.GetSampleCount() != 3 {
		t.Errorf("nixoci_request_seconds{route=narinfo}: %v, want a histogram of 3 samples", s)
	} else if sum := s.Histogram.GetSampleSum(); sum < 0.004 || sum > 0.0041 {
		t.Errorf("nixoci_request_seconds{route=narinfo} sum %v, want 0.004", sum)
	}
	if s := sample(f, "nixoci_backend_seconds", "op", "narinfo"); s == nil || s.Histogram.GetSampleCount() != 3 {
		t.Errorf("nixoci_backend_seconds{op=narinfo}: %v, want a histogram of 3 samples", s)
	}
}

// TestMetricsHotPathAllocatesNothing: counting a request, a backend
// operation and a cache lookup allocates nothing once their series exist.
func TestMetricsHotPathAllocatesNothing(t *testing.T) {
	m := NewMetrics()
	route, op, cache := m.Route("narinfo"), m.Op("narinfo"), m.Cache("narinfo")
	start := time.Now()
	count := func() {
		route.observe(http.MethodGet, 200, 100, time.Millisecond)
		op.Observe(start, nil)
		cache.Count(true)
	}
	count() // the first request of a kind makes its series
	if n := testing.AllocsPerRun(100, count); n != 0 {
		t.Errorf("%v allocations per request counted", n)
	}
}
