package backend

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// nixoci retries in one place. Every operation on a registry target that
// Open returns (a fetch together with reading what it fetched, an
// existence check, an upload, a tag) is retried as a whole when it fails
// transiently (IsTransient: unreachable, reset, stalled, cut short, 5xx,
// 408, 429, a manifest whose blobs the registry lost track of), and so is
// every operation run with Retry (binary-cache requests). The HTTP client
// underneath does not retry, and callers do not either, so the bounds
// below are the whole story:
const (
	// RetryAttempts is how many times an operation is tried at most.
	RetryAttempts = 10
	// Before each attempt after the first, the wait is drawn from
	// [d/2, d], where d is retryFirstWait doubled after each failure up
	// to retryMaxWait: 0.25 s, 0.5 s, 1 s, 2 s, then 3 s. The random
	// half spreads out clients that failed together. Nine waits add up
	// to at most 18.75 s.
	retryFirstWait = 250 * time.Millisecond
	retryMaxWait   = 3 * time.Second
	// A Retry-After (429 or 503) replaces a shorter wait. One longer than
	// maxRetryAfter ends the retries: such a registry is rate limiting
	// for longer than a command should sit waiting.
	maxRetryAfter = 30 * time.Second
)

// Retry runs op until it succeeds, fails for a reason retrying will not
// fix, ctx ends, or RetryAttempts attempts have failed, waiting between
// attempts as described above; it returns op's last error. what names the
// operation in the log line of each retry.
func Retry(ctx context.Context, what string, op func(ctx context.Context) error) error {
	r := newRetrier(what)
	actx := r.attemptContext(ctx)
	for {
		err := op(actx)
		if err == nil || !r.again(ctx, err) {
			return err
		}
	}
}

// retrier counts the failed attempts of one operation and waits before
// the next.
type retrier struct {
	what     string
	failures int
	// retryAfter is what the last response's Retry-After asked for, set
	// by the transport (see attemptContext).
	retryAfter atomic.Int64
}

func newRetrier(what string) *retrier { return &retrier{what: what} }

type retrierKey struct{}

// attemptContext is ctx carrying r, so that the transport can record a
// Retry-After header for r's next wait.
func (r *retrier) attemptContext(ctx context.Context) context.Context {
	return context.WithValue(ctx, retrierKey{}, r)
}

// again reports whether the operation should be tried again after it
// failed with err, having waited before the next attempt if so.
func (r *retrier) again(ctx context.Context, err error) bool {
	r.failures++
	if !IsTransient(err) || r.failures >= RetryAttempts || ctx.Err() != nil {
		return false
	}
	wait, ok := retryWait(r.failures, time.Duration(r.retryAfter.Swap(0)), rand.Int64N)
	if !ok {
		return false
	}
	slog.Warn("transient failure, retrying", "what", r.what, "attempt", r.failures+1, "of", RetryAttempts,
		"in", wait.Round(time.Millisecond), "err", err)
	return sleep(ctx, wait)
}

// sleep waits d, or reports false if ctx ends first. Tests replace it.
var sleep = func(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// retryWait is the wait after the failures-th failure: drawn from
// [d/2, d] with randN (rand.Int64N), or retryAfter if that is longer. It
// reports false for a retryAfter over maxRetryAfter.
func retryWait(failures int, retryAfter time.Duration, randN func(int64) int64) (time.Duration, bool) {
	if retryAfter > maxRetryAfter {
		return 0, false
	}
	d := retryMaxWait
	if failures < 8 { // beyond that the shift would pass the cap anyway
		d = min(retryFirstWait<<(failures-1), retryMaxWait)
	}
	wait := d/2 + time.Duration(randN(int64(d/2)+1))
	return max(wait, retryAfter), true
}

// noteRetryAfter records resp's Retry-After for the retrier of the
// request's operation, if it has one.
func noteRetryAfter(req *http.Request, resp *http.Response) {
	if resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable {
		return
	}
	r, ok := req.Context().Value(retrierKey{}).(*retrier)
	if !ok {
		return
	}
	if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		r.retryAfter.Store(int64(d))
	}
}

// parseRetryAfter reads a Retry-After value: seconds, or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(min(s, 1<<20)) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}
