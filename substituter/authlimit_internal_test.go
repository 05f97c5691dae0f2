package substituter

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestAuthenticateBounds: a client causes checkBurst bcrypt checks, then
// is throttled without a check and told when to retry; another client
// is not held back; a password checked before, right or wrong, costs no
// check; concurrent requests with one password share one check.
func TestAuthenticateBounds(t *testing.T) {
	c := credentialsFor(t, bcrypt.MinCost, "alice", "pw-alice-1")
	ctx := context.Background()
	for i := range checkBurst {
		ok, err := c.Authenticate(ctx, "192.0.2.1", "alice", "wrong-"+strconv.Itoa(i))
		if ok || err != nil {
			t.Fatalf("wrong password %d: %v, %v; want refused", i, ok, err)
		}
	}
	if n := c.Checks(); n != checkBurst {
		t.Errorf("%d checks for %d wrong passwords", n, checkBurst)
	}
	for i := range 100 {
		_, err := c.Authenticate(ctx, "192.0.2.1", "alice", "more-"+strconv.Itoa(i))
		var th *ThrottledError
		if !errors.As(err, &th) || !errors.Is(err, ErrThrottled) {
			t.Fatalf("wrong password past the burst: %v, want ThrottledError", err)
		}
		if th.RetryAfter <= 0 || th.RetryAfter > checkInterval {
			t.Errorf("RetryAfter %v, want within (0, %v]", th.RetryAfter, checkInterval)
		}
	}
	if n := c.Checks(); n != checkBurst {
		t.Errorf("throttled attempts made checks: %d, want %d", n, checkBurst)
	}
	// The same wrong password again is refused from memory, throttled or
	// not; so is the right one of another client after its check.
	if ok, err := c.Authenticate(ctx, "192.0.2.1", "alice", "wrong-0"); ok || err != nil {
		t.Errorf("a remembered wrong password: %v, %v; want refused without throttling", ok, err)
	}
	if ok, err := c.Authenticate(ctx, "192.0.2.2", "alice", "pw-alice-1"); !ok || err != nil {
		t.Errorf("another client with the right password: %v, %v", ok, err)
	}
	if ok, err := c.Authenticate(ctx, "192.0.2.1", "alice", "pw-alice-1"); !ok || err != nil {
		t.Errorf("the throttled client with a remembered right password: %v, %v", ok, err)
	}
	if n := c.Checks(); n != checkBurst+1 {
		t.Errorf("%d checks, want %d", n, checkBurst+1)
	}

	// A client's concurrent first requests share one check.
	var wg sync.WaitGroup
	for range 25 {
		wg.Go(func() {
			if ok, err := c.Authenticate(ctx, "192.0.2.3", "bob", "new-pw"); ok || err != nil {
				t.Errorf("unknown user: %v, %v", ok, err)
			}
		})
	}
	wg.Wait()
	if n := c.Checks(); n > checkBurst+1+3 {
		t.Errorf("25 concurrent requests with one password made %d checks", n-checkBurst-1)
	}
}

// TestAuthenticateBoundsCores: bcrypt runs on at most half the cores
// (one at least): with every slot taken, a check waits, and gives up
// with its request.
func TestAuthenticateBoundsCores(t *testing.T) {
	c := credentialsFor(t, bcrypt.MinCost, "alice", "pw-alice-1")
	if got, want := cap(c.limits.slots), max(1, runtime.GOMAXPROCS(0)/2); got != want {
		t.Errorf("%d bcrypt slots, want %d", got, want)
	}
	for range cap(c.limits.slots) {
		c.limits.slots <- struct{}{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if ok, err := c.Authenticate(ctx, "192.0.2.1", "alice", "pw-alice-1"); ok || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("check with every slot taken: %v, %v; want it to wait until the request ends", ok, err)
	}
	if n := c.Checks(); n != 0 {
		t.Errorf("%d checks ran with every slot taken", n)
	}
	<-c.limits.slots
	if ok, err := c.Authenticate(context.Background(), "192.0.2.1", "alice", "pw-alice-1"); !ok || err != nil {
		t.Errorf("check with a slot free: %v, %v", ok, err)
	}
}
