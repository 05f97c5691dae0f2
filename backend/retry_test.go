package backend

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"
)

func TestRetryWait(t *testing.T) {
	// d doubles from 250 ms to the 3 s cap; the wait is d/2 plus a
	// random part in [0, d/2].
	wantD := []time.Duration{250, 500, 1000, 2000, 3000, 3000, 3000, 3000, 3000, 3000}
	var total time.Duration
	for i, d := range wantD {
		d *= time.Millisecond
		failures := i + 1
		lo, ok := retryWait(failures, 0, func(int64) int64 { return 0 })
		if !ok || lo != d/2 {
			t.Errorf("failure %d: shortest wait %v, want %v", failures, lo, d/2)
		}
		hi, _ := retryWait(failures, 0, func(n int64) int64 { return n - 1 })
		if hi != d {
			t.Errorf("failure %d: longest wait %v, want %v", failures, hi, d)
		}
		if failures < RetryAttempts {
			total += hi
		}
	}
	if want := 18750 * time.Millisecond; total != want {
		t.Errorf("the %d waits add up to at most %v, want %v (as documented)", RetryAttempts-1, total, want)
	}
	if w, _ := retryWait(1, 2*time.Second, func(int64) int64 { return 0 }); w != 2*time.Second {
		t.Errorf("a Retry-After of 2s gave a wait of %v", w)
	}
	if w, _ := retryWait(5, time.Second, func(n int64) int64 { return n - 1 }); w != 3*time.Second {
		t.Errorf("a Retry-After shorter than the backoff gave %v, want the backoff 3s", w)
	}
	if _, ok := retryWait(1, maxRetryAfter+time.Second, func(int64) int64 { return 0 }); ok {
		t.Errorf("a Retry-After over %v did not end the retries", maxRetryAfter)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1", time.Second, true},
		{"120", 2 * time.Minute, true},
		{"Tue, 01 Dec 2026 12:00:07 GMT", 7 * time.Second, true},
		{"Tue, 01 Dec 2026 11:00:00 GMT", 0, true}, // in the past: now
		{"", 0, false},
		{"-1", 0, false},
		{"soon", 0, false},
	} {
		got, ok := parseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// TestRetry: transient failures are tried RetryAttempts times in all,
// with a wait before each retry; other failures, and a cancelled
// context, stop at once; a Retry-After the transport noted is waited.
func TestRetry(t *testing.T) {
	var waits []time.Duration
	SetRetrySleep(t, func(ctx context.Context, d time.Duration) bool {
		waits = append(waits, d)
		return ctx.Err() == nil
	})
	transient := fmt.Errorf("registry.example/me/nix: fetching: %w", ErrRegistry)
	for _, tc := range []struct {
		name      string
		fail      int // attempts that fail before one succeeds
		err       error
		wantCalls int
		wantErr   bool
	}{
		{"succeeds", 0, transient, 1, false},
		{"transient, then succeeds", 3, transient, 4, false},
		{"always transient", 1000, transient, RetryAttempts, true},
		{"not transient", 1000, errors.New("manifest invalid"), 1, true},
		{"unreachable", 1000, fmt.Errorf("x: %w", ErrUnreachable), RetryAttempts, true},
		{"stalled", 1000, fmt.Errorf("x: %w", ErrStalled), RetryAttempts, true},
		{"unauthorized", 1000, fmt.Errorf("x: %w", ErrUnauthorized), 1, true},
		{"cache 503", 1000, fmt.Errorf("x.narinfo: %w", &StatusError{503, "503 Service Unavailable"}), RetryAttempts, true},
		{"cache 429", 2, &StatusError{429, "429 Too Many Requests"}, 3, false},
		{"cache 401", 1000, &StatusError{401, "401 Unauthorized"}, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			waits = nil
			calls := 0
			err := Retry(t.Context(), "test", func(ctx context.Context) error {
				calls++
				if calls <= tc.fail {
					return tc.err
				}
				return nil
			})
			if calls != tc.wantCalls || (err != nil) != tc.wantErr {
				t.Errorf("%d calls, error %v; want %d calls, error %v", calls, err, tc.wantCalls, tc.wantErr)
			}
			if tc.wantErr && !errors.Is(err, tc.err) {
				t.Errorf("Retry returned %v, not the last error %v", err, tc.err)
			}
			if len(waits) != calls-1 {
				t.Errorf("%d waits for %d calls", len(waits), calls)
			}
		})
	}

	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		calls := 0
		err := Retry(ctx, "test", func(ctx context.Context) error {
			calls++
			cancel()
			return transient
		})
		if calls != 1 || err == nil {
			t.Errorf("%d calls after cancelling, error %v; want 1 call and the error", calls, err)
		}
	})

	t.Run("Retry-After", func(t *testing.T) {
		waits = nil
		calls := 0
		err := Retry(t.Context(), "test", func(ctx context.Context) error {
			if calls++; calls == 1 {
				// What the transport does with a 429 answer.
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://registry.example/v2/", nil)
				noteRetryAfter(req, &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"7"}}})
				return transient
			}
			return nil
		})
		if err != nil || len(waits) != 1 || waits[0] != 7*time.Second {
			t.Errorf("after a 429 with Retry-After: 7: error %v, waits %v; want one wait of 7s", err, waits)
		}
	})
}
