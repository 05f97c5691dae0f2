package substituter_test

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/internal/serving"
	"github.com/nixoci/nixoci/spec"
	"github.com/nixoci/nixoci/substituter"
)

// TestUploadThrottlesPasswordChecks: a client sending wrong passwords is
// answered 401 for its first ten (each a bcrypt check), then 429 with
// Retry-After without a check; another client behind the same trusted
// proxy uploads with the right password meanwhile; the checks are
// counted in /metrics.
func TestUploadThrottlesPasswordChecks(t *testing.T) {
	l := newLayout(t)
	p := newTestPath(t, "throttle-1", "throttle", spec.CompressionZstd)
	proxy := netip.MustParsePrefix("192.0.2.1/32") // httptest's RemoteAddr
	s, _ := uploadServer(t, l, substituter.Options{Clients: serving.NewClients([]netip.Prefix{proxy})})
	from := func(client string) []string { return []string{"X-Forwarded-For", client} }
	var codes []string
	for i := range 15 {
		r := put(t, s, p.NarURLPath(), p.File, append(from("203.0.113.66"), "Authorization", basicAuth(testUser, "guess-"+strconv.Itoa(i)))...)
		codes = append(codes, strconv.Itoa(r.Code))
		if r.Code == http.StatusTooManyRequests {
			if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 10 {
				t.Errorf("429 with Retry-After %q, want 1..10 seconds", r.Header.Get("Retry-After"))
			}
		}
	}
	if got, want := strings.Join(codes, " "), strings.Repeat("401 ", 10)+"429 429 429 429 429"; got != want {
		t.Errorf("wrong passwords answered %s, want %s", got, want)
	}
	if r := put(t, s, p.NarURLPath(), p.File, append(from("203.0.113.7"), goodAuth...)...); r.Code != http.StatusCreated {
		t.Errorf("another client's upload while one is throttled: %d %s", r.Code, r.Body)
	}
	metrics := get(t, s, "/metrics").Body
	for _, want := range []string{"nixoci_password_checks_total 11", `nixoci_uploads_total{kind="any",outcome="throttled"} 5`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
