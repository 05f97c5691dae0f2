package testenv

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago: it
// binds port 0, reads the port the kernel picked, and closes the listener.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("FreePort: listening on 127.0.0.1:0: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitHTTP polls url with GET until it answers with one of okStatus (any 2xx
// when none is given) or until timeout has passed, then fails the test with
// the last status or error seen.
func WaitHTTP(t testing.TB, url string, timeout time.Duration, okStatus ...int) {
	t.Helper()
	if err := waitHTTP(url, timeout, nil, okStatus...); err != nil {
		t.Fatalf("WaitHTTP: %v", err)
	}
}

// waitHTTP is WaitHTTP returning an error. It also gives up early if exited
// is closed (the server process died).
func waitHTTP(url string, timeout time.Duration, exited <-chan struct{}, okStatus ...int) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	last := "no answer yet"
	const poll = 25 * time.Millisecond
	// A request in flight is abandoned as soon as the server exits.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if exited != nil {
		go func() {
			select {
			case <-exited:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	for {
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			ok := slices.Contains(okStatus, resp.StatusCode) ||
				len(okStatus) == 0 && resp.StatusCode/100 == 2
			if ok {
				return nil
			}
			last = "status " + resp.Status
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			want := "2xx"
			if len(okStatus) > 0 {
				want = fmt.Sprint(okStatus)
			}
			return fmt.Errorf("GET %s did not answer with status %s within %v; last: %s", url, want, timeout, last)
		}
		select {
		case <-exited:
			return fmt.Errorf("GET %s: the server exited before it was ready; last: %s", url, last)
		case <-time.After(poll):
		}
	}
}
