package substituter

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// upstreamHealthTTL is how long a check of the upstreams is kept.
const upstreamHealthTTL = 5 * time.Second

// upstreamHealth checks the upstreams for /healthz, separately from the
// backends: an upstream that does not answer leaves serve able to serve
// what its backends hold. A result is kept for upstreamHealthTTL, shared
// by concurrent requests; the answer names failing upstreams, never
// their errors (which are logged).
type upstreamHealth struct {
	upstreams []Upstream
	log       *slog.Logger
	up        *prometheus.GaugeVec

	mu      sync.Mutex
	checked time.Time
	failed  []string
}

func newUpstreamHealth(upstreams []Upstream, log *slog.Logger) *upstreamHealth {
	return &upstreamHealth{upstreams: upstreams, log: log, up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nixoci_upstream_up",
		Help: "Whether each upstream answered its last health check (nix-cache-info), 1 or 0; checked when /healthz is asked, at most every 5s.",
	}, []string{"upstream"})}
}

// check returns the names of the upstreams that do not answer, asking
// them (at once, each within timeout) if the last check is older than
// upstreamHealthTTL.
func (h *upstreamHealth) check(ctx context.Context, timeout time.Duration) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.checked.IsZero() && time.Since(h.checked) < upstreamHealthTTL {
		return h.failed
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	errs := make([]error, len(h.upstreams))
	var wg sync.WaitGroup
	for i, up := range h.upstreams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = up.Cache.Ping(ctx)
		}()
	}
	wg.Wait()
	h.failed = nil
	for i, up := range h.upstreams {
		if errs[i] != nil {
			h.failed = append(h.failed, up.Name)
			h.up.WithLabelValues(up.Name).Set(0)
			h.log.Warn("health check: upstream does not answer", "upstream", up.Name, "err", errs[i])
		} else {
			h.up.WithLabelValues(up.Name).Set(1)
		}
	}
	h.checked = time.Now()
	return h.failed
}
