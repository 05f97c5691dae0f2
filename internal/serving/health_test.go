package serving

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixoci/nixoci/backend"
)

// pinged is a layout whose pings are counted and fail with err if set.
type pinged struct {
	backend.Target
	pings atomic.Int64
	err   atomic.Pointer[error]
}

func (p *pinged) Ping(ctx context.Context) error {
	p.pings.Add(1)
	if err := p.err.Load(); err != nil {
		return *err
	}
	return p.Target.Ping(ctx)
}

// TestHealth: /healthz names a failing backend without its error (which
// goes to the log), pings each backend at most once per HealthTTL
// however many ask, concurrently or not, and sees a change after it.
func TestHealth(t *testing.T) {
	var targets []*pinged
	var list []Backend
	for _, name := range []string{"good", "bad"} {
		l, err := backend.OpenLayout(filepath.Join(t.TempDir(), name), true)
		if err != nil {
			t.Fatal(err)
		}
		p := &pinged{Target: l}
		targets = append(targets, p)
		list = append(list, Backend{Name: name, Target: p})
	}
	secret := errors.New("GET https://registry.internal:5000/v2/: 401 token for ci-robot expired")
	targets[1].err.Store(&secret)
	bs, err := NewBackends(list, BackendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	var logMu sync.Mutex
	h := NewHealth(bs, slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil)))
	clock := time.Unix(1000, 0)
	h.now = func() time.Time { return clock }
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		return rec.Code, rec.Body.String()
	}

	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if code, body := get(); code != http.StatusServiceUnavailable || !strings.Contains(body, "bad") || strings.Contains(body, "good") {
				t.Errorf("GET /healthz with one failing backend = %d %q, want 503 naming bad only", code, body)
			} else if strings.Contains(body, "401") || strings.Contains(body, "ci-robot") || strings.Contains(body, "registry.internal") {
				t.Errorf("GET /healthz echoes the backend's error: %q", body)
			}
		})
	}
	wg.Wait()
	for i, p := range targets {
		if n := p.pings.Load(); n != 1 {
			t.Errorf("backend %d pinged %d times by 20 requests within %v, want 1", i, n, HealthTTL)
		}
	}
	logMu.Lock()
	if !strings.Contains(logs.String(), "ci-robot expired") || !strings.Contains(logs.String(), "backend=bad") {
		t.Errorf("the failure's cause is not logged:\n%s", logs.String())
	}
	logMu.Unlock()

	targets[1].err.Store(nil)
	clock = clock.Add(HealthTTL - time.Millisecond)
	if code, _ := get(); code != http.StatusServiceUnavailable {
		t.Errorf("within %v of the check: %d, want the remembered 503", HealthTTL, code)
	}
	clock = clock.Add(time.Millisecond)
	if code, body := get(); code != http.StatusOK || body != "ok\n" {
		t.Errorf("after %v, with every backend answering: %d %q, want 200 ok", HealthTTL, code, body)
	}
	if n := targets[0].pings.Load(); n != 2 {
		t.Errorf("pings after the result expired: %d, want 2", n)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}
