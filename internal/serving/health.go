package serving

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

// HealthTTL is how long Health keeps the result of a check.
const HealthTTL = 5 * time.Second

// Health answers /healthz: 200 "ok" if every backend answers a ping,
// else 503 naming the backends that do not. It is unauthenticated and
// meant to be polled, so it stays cheap and says little: a result is
// kept for HealthTTL (however often it is asked, each backend is pinged
// at most once per HealthTTL, and concurrent requests share one check),
// and the answer names the failing backends but never their errors,
// which are logged instead (they may tell more about the registry than
// a client should learn).
type Health struct {
	backends *Backends
	log      *slog.Logger
	now      func() time.Time

	mu      sync.Mutex
	checked time.Time // zero: never
	failed  []string  // names of the backends that failed the last check
}

// NewHealth makes a Health for backends, logging failures to log (nil:
// slog.Default()).
func NewHealth(backends *Backends, log *slog.Logger) *Health {
	if log == nil {
		log = slog.Default()
	}
	return &Health{backends: backends, log: log, now: time.Now}
}

// Check returns the names of the backends that did not answer, pinging
// them if the last check is older than HealthTTL. The ping does not end
// with ctx: its result serves other requests.
func (h *Health) Check(ctx context.Context) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.checked.IsZero() && h.now().Sub(h.checked) < HealthTTL {
		return h.failed
	}
	errs := h.backends.Ping(context.WithoutCancel(ctx))
	h.failed = nil
	for i, b := range h.backends.List() {
		if err, ok := errs[i]; ok {
			h.failed = append(h.failed, b.Name)
			h.log.Warn("health check: backend does not answer", "backend", b.Name, "err", err)
		}
	}
	h.checked = h.now()
	return h.failed
}

func (h *Health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if failed := h.Check(r.Context()); len(failed) > 0 {
		http.Error(w, "unhealthy: "+strings.Join(failed, ", ")+" (see the server's log)", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}
