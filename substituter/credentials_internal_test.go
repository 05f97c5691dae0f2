package substituter

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func credentialsFor(t testing.TB, cost int, userPasswords ...string) *Credentials {
	t.Helper()
	var b strings.Builder
	for i := 0; i+1 < len(userPasswords); i += 2 {
		hash, err := bcrypt.GenerateFromPassword([]byte(userPasswords[i+1]), cost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:%s\n", userPasswords[i], hash)
	}
	c, err := ParseCredentials(strings.NewReader(b.String()), "test")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestVerifiedCache: only successful verifications are remembered, one
// entry per user and password, keyed by neither in clear, within the
// bound.
func TestVerifiedCache(t *testing.T) {
	c := credentialsFor(t, bcrypt.MinCost, "alice", "pw-alice-1", "bob", "pw-bob-1")
	for i, step := range []struct {
		user, password string
		want           bool
		entries        int
	}{
		{"alice", "wrong", false, 0},
		{"mallory", "pw-alice-1", false, 0},
		{"alice", "pw-alice-1", true, 1},
		{"alice", "pw-alice-1", true, 1},
		{"bob", "pw-alice-1", false, 1},
		{"bob", "pw-bob-1", true, 2},
	} {
		if got := c.Verify(step.user, step.password); got != step.want {
			t.Errorf("step %d: Verify(%s, %s) = %v", i, step.user, step.password, got)
		}
		if n := c.verified.Len(); n != step.entries {
			t.Errorf("step %d: %d verified entries, want %d", i, n, step.entries)
		}
	}
	// The refusals were remembered too, apart, keyed the same way.
	if n := c.refused.Len(); n != 3 {
		t.Errorf("%d refused entries, want 3", n)
	}
	if ok := c.Verify("alice", "wrong"); ok {
		t.Error("a remembered refusal verified")
	}
	for _, key := range append(c.verified.Keys(), c.refused.Keys()...) {
		for _, clear := range []string{"alice", "bob", "mallory", "wrong", "pw-alice-1", "pw-bob-1"} {
			if strings.Contains(key, clear) {
				t.Errorf("a cache key holds %q in clear", clear)
			}
		}
	}
	if c.verified.Max() != passwordCacheMax || passwordCacheMax > 4096 {
		t.Errorf("cache bound %d, want passwordCacheMax (%d, at most 4096)", c.verified.Max(), passwordCacheMax)
	}
	// Two loads draw two keys: a key is never a constant of the program.
	if d := credentialsFor(t, bcrypt.MinCost, "alice", "x"); bytes.Equal(d.key, c.key) {
		t.Error("two Credentials share their HMAC key")
	}
}

// BenchmarkVerify: a bcrypt check at htpasswd -B's default cost, and the
// same check remembered.
func BenchmarkVerify(b *testing.B) {
	c := credentialsFor(b, 5, "alice", "pw-alice-1")
	b.Run("bcrypt", func(b *testing.B) {
		for b.Loop() {
			c.verified.Remove(c.cacheKey("alice", "pw-alice-1"))
			c.Verify("alice", "pw-alice-1")
		}
	})
	b.Run("remembered", func(b *testing.B) {
		for b.Loop() {
			c.Verify("alice", "pw-alice-1")
		}
	})
}
