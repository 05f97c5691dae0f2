package substituter

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
)

// metrics holds counters in the Prometheus text exposition format. It is
// small on purpose: a handful of counters and sums, no client library.
type metrics struct {
	mu     sync.Mutex
	values map[series]float64
	help   map[string]string // name -> "TYPE\thelp"
}

// series names one time series: a metric and up to three label pairs.
// A comparable struct, so counting a request allocates nothing.
type series struct {
	name   string
	labels [6]string
}

func (s series) String() string {
	var b strings.Builder
	b.WriteString(s.name)
	if s.labels[0] != "" {
		b.WriteByte('{')
		for i := 0; i < len(s.labels) && s.labels[i] != ""; i += 2 {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%s=%q", s.labels[i], s.labels[i+1])
		}
		b.WriteByte('}')
	}
	return b.String()
}

func newMetrics() *metrics {
	m := &metrics{values: map[series]float64{}, help: map[string]string{}}
	m.describe("nixoci_requests_total", "counter", "HTTP requests by route, method and status.")
	m.describe("nixoci_response_bytes_total", "counter", "Response body bytes by route.")
	m.describe("nixoci_cache_total", "counter", "In-memory cache lookups by cache and result (hit, miss).")
	m.describe("nixoci_backend_requests_total", "counter", "Backend operations by operation and outcome.")
	m.describe("nixoci_backend_seconds_sum", "counter", "Total seconds spent in backend operations, by operation.")
	m.describe("nixoci_backend_seconds_count", "counter", "Backend operations timed, by operation.")
	m.describe("nixoci_uploads_total", "counter", "Upload requests by kind and outcome.")
	m.describe("nixoci_corrupt_blobs_total", "counter", "Blobs whose content did not match their digest while served.")
	m.describe("nixoci_blob_sendfile_total", "counter", "Blob responses sent straight from a layout file verified whole before.")
	return m
}

func (m *metrics) describe(name, typ, help string) { m.help[name] = typ + "\t" + help }

// add adds v to the series name with labels given as key, value pairs.
func (m *metrics) add(name string, v float64, labels ...string) {
	k := series{name: name}
	copy(k.labels[:], labels)
	m.mu.Lock()
	m.values[k] += v
	m.mu.Unlock()
}

// observeBackend records one backend operation.
func (m *metrics) observeBackend(op string, start time.Time, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
		if isNotFound(err) {
			outcome = "not_found"
		}
	}
	m.add("nixoci_backend_requests_total", 1, "op", op, "outcome", outcome)
	m.add("nixoci_backend_seconds_sum", time.Since(start).Seconds(), "op", op)
	m.add("nixoci_backend_seconds_count", 1, "op", op)
}

func (m *metrics) cache(name string, hit bool) {
	result := "miss"
	if hit {
		result = "hit"
	}
	m.add("nixoci_cache_total", 1, "cache", name, "result", result)
}

// write prints every series, grouped by metric name, sorted.
func (m *metrics) write(w io.Writer) {
	m.mu.Lock()
	byName := make(map[string]float64, len(m.values))
	for k, v := range m.values {
		byName[k.String()] = v
	}
	m.mu.Unlock()
	series := make([]string, 0, len(byName))
	for s := range byName {
		series = append(series, s)
	}
	sort.Strings(series)
	values := make([]float64, len(series))
	for i, s := range series {
		values[i] = byName[s]
	}
	described := map[string]bool{}
	for i, s := range series {
		name, _, _ := strings.Cut(s, "{")
		if h, ok := m.help[name]; ok && !described[name] {
			typ, text, _ := strings.Cut(h, "\t")
			fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, typ)
			described[name] = true
		}
		fmt.Fprintf(w, "%s %g\n", s, values[i])
	}
}
