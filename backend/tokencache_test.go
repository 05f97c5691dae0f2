package backend

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/auth"
)

var _ auth.Cache = (*expiringCache)(nil)

// makeJWT is an (unsigned) JWT with these claims; iat 0 leaves it out.
func makeJWT(iat, exp int64, n int) string {
	enc := base64.RawURLEncoding.EncodeToString
	claims := fmt.Sprintf(`{"exp":%d,"jti":"%d"}`, exp, n)
	if iat != 0 {
		claims = fmt.Sprintf(`{"iat":%d,"exp":%d,"jti":"%d"}`, iat, exp, n)
	}
	return enc([]byte(`{"alg":"ES256"}`)) + "." + enc([]byte(claims)) + ".c2ln"
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

const (
	testRegistry = "registry.example"
	testScope    = "repository:me/nix:pull"
)

// cacheCheck: at t0+after, GetToken has made fetches fetches in all and
// gives a token (ok) or ErrNotFound.
type cacheCheck struct {
	after   time.Duration
	fetches int
	ok      bool
}

func TestExpiringCache(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	ctx := context.Background()
	tests := []struct {
		name string
		// token returns the n-th token fetched (from 1) at time now.
		token func(n int, now time.Time) string
		// fail makes fetches after the first fail.
		fail bool
		// at: the calls of GetToken, in order.
		at []cacheCheck
	}{
		{
			name:  "five-minute JWT fetched again 30 s before it expires",
			token: func(n int, now time.Time) string { return makeJWT(now.Unix(), now.Add(5*time.Minute).Unix(), n) },
			at:    []cacheCheck{{0, 1, true}, {269 * time.Second, 1, true}, {271 * time.Second, 2, true}, {272 * time.Second, 2, true}, {540 * time.Second, 2, true}, {542 * time.Second, 3, true}},
		},
		{
			name:  "one-minute JWT fetched again a fifth of its life before",
			token: func(n int, now time.Time) string { return makeJWT(now.Unix(), now.Add(time.Minute).Unix(), n) },
			at:    []cacheCheck{{47 * time.Second, 1, true}, {49 * time.Second, 2, true}},
		},
		{
			name: "token server clock an hour behind: the lifetime counts",
			token: func(n int, now time.Time) string {
				iat := now.Add(-time.Hour)
				return makeJWT(iat.Unix(), iat.Add(5*time.Minute).Unix(), n)
			},
			at: []cacheCheck{{time.Second, 1, true}, {269 * time.Second, 1, true}, {271 * time.Second, 2, true}},
		},
		{
			name:  "JWT without iat: lifetime from this clock",
			token: func(n int, now time.Time) string { return makeJWT(0, now.Add(5*time.Minute).Unix(), n) },
			at:    []cacheCheck{{269 * time.Second, 1, true}, {271 * time.Second, 2, true}},
		},
		{
			name:  "opaque token kept until refused",
			token: func(n int, now time.Time) string { return fmt.Sprintf("opaque-%d", n) },
			at:    []cacheCheck{{24 * time.Hour, 1, true}},
		},
		{
			name:  "failed refresh: the old token while valid, then none",
			token: func(n int, now time.Time) string { return makeJWT(now.Unix(), now.Add(5*time.Minute).Unix(), n) },
			fail:  true,
			at:    []cacheCheck{{280 * time.Second, 2, true}, {301 * time.Second, 3, false}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{now: t0}
			c := newExpiringCache(auth.NewCache())
			c.now = clock.Now
			var fetches int
			fetch := func(context.Context) (string, error) {
				fetches++
				if tc.fail && fetches > 1 {
					return "", errors.New("token server down")
				}
				return tc.token(fetches, clock.Now()), nil
			}
			first, err := c.Set(ctx, testRegistry, auth.SchemeBearer, testScope, fetch)
			if err != nil {
				t.Fatal(err)
			}
			last := first
			for _, at := range tc.at {
				clock.Set(t0.Add(at.after))
				got, err := c.GetToken(ctx, testRegistry, auth.SchemeBearer, testScope)
				if ok := err == nil; ok != at.ok || fetches != at.fetches {
					t.Fatalf("at t0+%v: token %v (err %v) after %d fetches, want token %v after %d", at.after, ok, err, fetches, at.ok, at.fetches)
				}
				if !at.ok {
					if !errors.Is(err, errdef.ErrNotFound) {
						t.Errorf("at t0+%v: %v, want ErrNotFound", at.after, err)
					}
					continue
				}
				if fresh := at.fetches > 1 && !tc.fail; fresh && got == first || !fresh && got != last {
					t.Errorf("at t0+%v: got token %q (first %q)", at.after, got, first)
				}
				last = got
			}
		})
	}
}

// TestExpiringCacheOneRefresh: callers that find a token due at once
// cause one fetch.
func TestExpiringCacheOneRefresh(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	clock := &fakeClock{now: t0}
	c := newExpiringCache(auth.NewCache())
	c.now = clock.Now
	var fetches atomic.Int32
	fetch := func(context.Context) (string, error) {
		n := fetches.Add(1)
		now := clock.Now()
		return makeJWT(now.Unix(), now.Add(5*time.Minute).Unix(), int(n)), nil
	}
	ctx := context.Background()
	if _, err := c.Set(ctx, testRegistry, auth.SchemeBearer, testScope, fetch); err != nil {
		t.Fatal(err)
	}
	clock.Set(t0.Add(4*time.Minute + 45*time.Second))
	var wg sync.WaitGroup
	tokens := make([]string, 16)
	for i := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tokens[i], _ = c.GetToken(ctx, testRegistry, auth.SchemeBearer, testScope)
		}()
	}
	wg.Wait()
	if n := fetches.Load(); n != 2 {
		t.Errorf("%d fetches, want 2 (the first and one refresh)", n)
	}
	for i, tok := range tokens {
		if tok != tokens[0] || tok == "" {
			t.Fatalf("caller %d got %q, caller 0 %q", i, tok, tokens[0])
		}
	}
}

// TestExpiringCacheBasic: Basic credentials pass through untouched.
func TestExpiringCacheBasic(t *testing.T) {
	c := newExpiringCache(auth.NewCache())
	ctx := context.Background()
	c.Set(ctx, testRegistry, auth.SchemeBasic, "", func(context.Context) (string, error) { return "dXNlcjpwdw==", nil })
	got, err := c.GetToken(ctx, testRegistry, auth.SchemeBasic, "")
	if err != nil || got != "dXNlcjpwdw==" {
		t.Errorf("GetToken = %q, %v", got, err)
	}
	if len(c.entries) != 0 {
		t.Errorf("Basic credentials tracked for expiry: %v", c.entries)
	}
}

// TestExpiringCacheRefusals: a request refused without the cached token
// (sent before it was fetched) gets it; one refused with it gets a new one.
func TestExpiringCacheRefusals(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	clock := &fakeClock{now: t0}
	c := newExpiringCache(auth.NewCache())
	c.now = clock.Now
	var fetches int
	fetch := func(context.Context) (string, error) {
		fetches++
		now := clock.Now()
		return makeJWT(now.Unix(), now.Add(5*time.Minute).Unix(), fetches), nil
	}
	type key struct{ n int }
	request := func(n int) context.Context { return context.WithValue(context.Background(), key{n}, n) }

	ctx := request(1)
	c.noteRefusal(ctx, testRegistry, "")
	first, _ := c.Set(ctx, testRegistry, auth.SchemeBearer, testScope, fetch)
	for _, tc := range []struct {
		name    string
		sent    func() string // the token the refused request carried
		after   time.Duration
		fetches int
		same    bool
	}{
		{"sent with no token while the first was fetched", func() string { return "" }, time.Second, 1, true},
		{"sent with an older token", func() string { return "old-token" }, 2 * time.Second, 1, true},
		{"sent with the cached token", func() string { return first }, 3 * time.Second, 2, false},
	} {
		clock.Set(t0.Add(tc.after))
		ctx := request(int(tc.after))
		c.noteRefusal(ctx, testRegistry, tc.sent())
		got, err := c.Set(ctx, testRegistry, auth.SchemeBearer, testScope, fetch)
		if err != nil || fetches != tc.fetches || (got == first) != tc.same {
			t.Errorf("%s: %d fetches, same token %v (err %v); want %d, %v", tc.name, fetches, got == first, err, tc.fetches, tc.same)
		}
	}
	// Without a refusal noted (a fetch oras-go asks for itself), Set fetches.
	if _, err := c.Set(request(99), testRegistry, auth.SchemeBearer, testScope, fetch); err != nil || fetches != 3 {
		t.Errorf("Set without a refusal: %d fetches, want 3 (%v)", fetches, err)
	}
	if len(c.refusals) != 0 {
		t.Errorf("%d refusals kept after their Set", len(c.refusals))
	}
}

// TestExpiringCacheRefusalsSharingAContext: requests sent at once share
// their context (the blobs of one copy). Each is refused without a
// token; the first Set fetches one, and every other refused request
// gets it, however the Sets interleave with the refusals: one token
// request per scope. A refusal that carried the cached token still
// fetches a new one, even among refusals without.
func TestExpiringCacheRefusalsSharingAContext(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	c := newExpiringCache(auth.NewCache())
	c.now = clock.Now
	var fetches int
	fetch := func(context.Context) (string, error) {
		fetches++
		now := clock.Now()
		return makeJWT(now.Unix(), now.Add(5*time.Minute).Unix(), fetches), nil
	}
	ctx := context.Background()
	for range 3 {
		c.noteRefusal(ctx, testRegistry, "")
	}
	first, _ := c.Set(ctx, testRegistry, auth.SchemeBearer, testScope, fetch)
	c.noteRefusal(ctx, testRegistry, "") // a fourth, refused after the fetch
	for i := range 3 {
		got, err := c.Set(ctx, testRegistry, auth.SchemeBearer, testScope, fetch)
		if err != nil || got != first || fetches != 1 {
			t.Fatalf("Set of refused request %d: same token %v, %d fetches (err %v); want the first token, 1 fetch", i+2, got == first, fetches, err)
		}
	}
	// The cached token refused, next to a request sent without one.
	c.noteRefusal(ctx, testRegistry, "")
	c.noteRefusal(ctx, testRegistry, first)
	if got, err := c.Set(ctx, testRegistry, auth.SchemeBearer, testScope, fetch); err != nil || got == first || fetches != 2 {
		t.Errorf("Set after the cached token was refused: same token %v, %d fetches (err %v); want a new one", got == first, fetches, err)
	}
}
