package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago: it
// binds port 0, reads the port the kernel picked, and closes the listener.
// Another process may take the port before a server binds it: start
// servers with StartOnFreePort, which retries on another port then.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("FreePort: listening on 127.0.0.1:0: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// ErrAddrInUse: a server could not bind the address it was given.
var ErrAddrInUse = errors.New("address already in use")

// startAttempts bounds StartOnFreePort's tries. Losing the race for a
// just-freed port twice in a row is already rare.
const startAttempts = 5

// StartOnFreePort calls start with "127.0.0.1:PORT" for a port from
// FreePort and, while start fails with ErrAddrInUse (the port was taken
// between FreePort closing it and the server binding it), again with
// another port, up to 5 times. It returns the address start succeeded
// with; any other error, or running out of tries, fails the test.
func StartOnFreePort(t testing.TB, start func(addr string) error) string {
	t.Helper()
	return startOnPorts(t, func() int { return FreePort(t) }, start)
}

func startOnPorts(t testing.TB, port func() int, start func(addr string) error) string {
	t.Helper()
	var err error
	for range startAttempts {
		addr := fmt.Sprintf("127.0.0.1:%d", port())
		if err = start(addr); err == nil {
			return addr
		}
		if !errors.Is(err, ErrAddrInUse) {
			t.Fatalf("starting a server on %s: %v", addr, err)
		}
		t.Logf("%s was taken before the server bound it; trying another port", addr)
	}
	t.Fatalf("starting a server: %d ports in a row were taken before it bound them; last: %v", startAttempts, err)
	return ""
}

// BindFailed reports whether a server's output says it could not bind
// its address: Go servers print "bind: address already in use", nginx
// "(98: Address already in use)".
func BindFailed(output string) bool {
	return strings.Contains(strings.ToLower(output), "address already in use")
}

// WaitHTTP polls url with GET until it answers with one of okStatus (any 2xx
// when none is given) or until timeout has passed, then fails the test with
// the last status or error seen.
func WaitHTTP(t testing.TB, url string, timeout time.Duration, okStatus ...int) {
	t.Helper()
	if err := waitHTTP(nil, url, timeout, nil, okStatus...); err != nil {
		t.Fatalf("WaitHTTP: %v", err)
	}
}

// WaitServer is WaitHTTP for a server process: it returns an error
// instead of failing the test, and gives up as soon as exited is closed
// (the process died), abandoning a request in flight.
func WaitServer(url string, timeout time.Duration, exited <-chan struct{}, okStatus ...int) error {
	return waitHTTP(nil, url, timeout, exited, okStatus...)
}

// WaitServerWith is WaitServer asking with client (an HTTPS client
// trusting the server's CA, say).
func WaitServerWith(client *http.Client, url string, timeout time.Duration, exited <-chan struct{}, okStatus ...int) error {
	return waitHTTP(client, url, timeout, exited, okStatus...)
}

// waitHTTP is WaitHTTP returning an error. It also gives up early if exited
// is closed (the server process died).
func waitHTTP(client *http.Client, url string, timeout time.Duration, exited <-chan struct{}, okStatus ...int) error {
	if client == nil {
		client = &http.Client{}
	}
	c := *client
	c.Timeout = 2 * time.Second
	client = &c
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
