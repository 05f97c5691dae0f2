package substituter

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/nixoci/nixoci/internal/serving"
)

// Bounds of the bcrypt checks clients can cause. Each costs up to a
// second of CPU (cost 14), and a PUT with a wrong password is free to
// send: without bounds, a few clients sending wrong passwords take every
// core. A client (see serving.Clients) may cause checkBurst checks at
// once, then one per checkInterval; past that it is answered 429 with
// Retry-After, without a check. A user and password checked in the last
// passwordCacheTTL (right or wrong) are answered from memory and cost
// nothing; concurrent requests with one user and password (nix copy
// sends up to 25 at once) share one check.
const (
	checkBurst    = 10
	checkInterval = 10 * time.Second
	checkClients  = 10000 // clients whose checks are counted, the least recent forgotten
)

// ErrThrottled: a client has caused too many password checks; see
// ThrottledError.
var ErrThrottled = errors.New("too many password checks from this client")

// ThrottledError says when a throttled client may try again.
type ThrottledError struct{ RetryAfter time.Duration }

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("%v; retry in %v", ErrThrottled, e.RetryAfter.Round(time.Second))
}

func (e *ThrottledError) Unwrap() error { return ErrThrottled }

// checkLimits are the bounds on bcrypt checks of one Credentials.
type checkLimits struct {
	clients *serving.LRU[*rate.Limiter]
	slots   chan struct{} // bcrypt checks running: at most half the cores
	flight  singleflight.Group
	checks  atomic.Int64 // bcrypt checks made
}

func newCheckLimits() checkLimits {
	return checkLimits{
		clients: serving.NewLRU[*rate.Limiter](checkClients),
		slots:   make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/2)),
	}
}

// Authenticate reports whether password is user's, checked on behalf of
// client within the bounds on bcrypt checks: a *ThrottledError if client
// has caused too many, ctx's error if it ended while waiting for a
// check to run.
func (c *Credentials) Authenticate(ctx context.Context, client, user, password string) (bool, error) {
	key := c.cacheKey(user, password)
	if ok, known := c.remembered(key); known {
		return ok, nil
	}
	v, err, _ := c.limits.flight.Do(key, func() (any, error) {
		lim := c.limits.clients.GetOrAdd(client, time.Hour, func() *rate.Limiter {
			return rate.NewLimiter(rate.Every(checkInterval), checkBurst)
		})
		res := lim.Reserve()
		if d := res.Delay(); d > 0 {
			res.Cancel()
			return false, &ThrottledError{RetryAfter: d}
		}
		select {
		case c.limits.slots <- struct{}{}:
		case <-ctx.Done():
			return false, ctx.Err()
		}
		defer func() { <-c.limits.slots }()
		c.limits.checks.Add(1)
		return c.verify(key, user, password), nil
	})
	return v.(bool), err
}

// Checks is the number of bcrypt checks Authenticate has made.
func (c *Credentials) Checks() int64 { return c.limits.checks.Load() }

// collector shows Checks as nixoci_password_checks_total.
func (c *Credentials) collector() prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "nixoci_password_checks_total", Help: "Upload passwords checked with bcrypt (those remembered are not counted).",
	}, func() float64 { return float64(c.Checks()) })
}

// authorize checks the HTTP Basic credentials of an upload request
// within the bounds on password checks; if they do not pass, it answers
// the request (401, 429 or 503) and returns false.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	client := s.opts.Clients.Of(r)
	var err error
	if ok {
		ok, err = s.upload.opts.Credentials.Authenticate(r.Context(), client, user, pass)
	}
	var throttled *ThrottledError
	switch {
	case errors.As(err, &throttled):
		s.countUpload("any", "throttled")
		s.log.Warn("upload refused: too many password checks", "client", client, "retry_after", throttled.RetryAfter.Round(time.Second))
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(throttled.RetryAfter.Seconds()))))
		http.Error(w, throttled.Error(), http.StatusTooManyRequests)
	case err != nil:
		s.countUpload("any", "error")
		w.Header().Set("Retry-After", "1")
		http.Error(w, "password check interrupted", http.StatusServiceUnavailable)
	case !ok:
		s.countUpload("any", "unauthorized")
		w.Header().Set("WWW-Authenticate", `Basic realm="nixoci"`)
		http.Error(w, "credentials required", http.StatusUnauthorized)
	}
	return ok && err == nil
}
