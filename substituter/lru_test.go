package substituter

import (
	"strconv"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable lru clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func newTestLRU(max int) (*lru[int], *fakeClock) {
	c := newLRU[int](max)
	clock := &fakeClock{t: time.Unix(1000, 0)}
	c.now = clock.now
	return c, clock
}

func TestLRUEvictsLeastRecentlyUsed(t *testing.T) {
	c, _ := newTestLRU(3)
	for i := range 3 {
		c.put(strconv.Itoa(i), i, time.Hour)
	}
	c.get("0") // 0 is now the most recent; 1 the oldest
	c.put("3", 3, time.Hour)
	if c.len() != 3 {
		t.Errorf("len %d, want 3", c.len())
	}
	if _, ok := c.get("1"); ok {
		t.Error("the least recently used entry survived")
	}
	for _, k := range []string{"0", "2", "3"} {
		if v, ok := c.get(k); !ok || strconv.Itoa(v) != k {
			t.Errorf("get(%s) = %d, %v", k, v, ok)
		}
	}
	// Updating an entry does not grow the cache and makes it recent.
	c.put("0", 10, time.Hour) // recency now: 0, 3, 2
	c.put("4", 4, time.Hour)
	if v, ok := c.get("0"); !ok || v != 10 {
		t.Errorf("updated entry: %d, %v", v, ok)
	}
	if c.len() != 3 {
		t.Errorf("len %d after update, want 3", c.len())
	}
	if _, ok := c.get("2"); ok {
		t.Error("2 should have been evicted")
	}
}

func TestLRUExpiry(t *testing.T) {
	c, clock := newTestLRU(10)
	c.put("short", 1, time.Second)
	c.put("long", 2, time.Minute)
	clock.t = clock.t.Add(time.Second)
	if v, ok := c.get("short"); !ok || v != 1 {
		t.Errorf("entry gone at its expiry instant: %d %v", v, ok)
	}
	clock.t = clock.t.Add(time.Nanosecond)
	if _, ok := c.get("short"); ok {
		t.Error("expired entry returned")
	}
	if c.len() != 1 {
		t.Errorf("expired entry kept: len %d", c.len())
	}
	if v, ok := c.get("long"); !ok || v != 2 {
		t.Errorf("live entry: %d %v", v, ok)
	}
	// put refreshes the expiry.
	c.put("long", 3, time.Second)
	clock.t = clock.t.Add(2 * time.Second)
	if _, ok := c.get("long"); ok {
		t.Error("re-put with a shorter TTL kept the old expiry")
	}
}

func TestLRUDisabled(t *testing.T) {
	for _, tc := range []struct {
		max int
		ttl time.Duration
	}{{0, time.Hour}, {-1, time.Hour}, {10, 0}, {10, -time.Second}} {
		c, _ := newTestLRU(tc.max)
		c.put("k", 1, tc.ttl)
		if _, ok := c.get("k"); ok || c.len() != 0 {
			t.Errorf("max %d ttl %v: entry stored", tc.max, tc.ttl)
		}
	}
}

func TestLRURemove(t *testing.T) {
	c, _ := newTestLRU(10)
	c.put("a", 1, time.Hour)
	c.remove("a")
	c.remove("never")
	if _, ok := c.get("a"); ok || c.len() != 0 {
		t.Error("removed entry still there")
	}
}

// TestLRUNilValues: a nil value (a remembered "not found") is a hit.
func TestLRUNilValues(t *testing.T) {
	c := newLRU[*pathEntry](2)
	c.put("absent", nil, time.Hour)
	if v, ok := c.get("absent"); !ok || v != nil {
		t.Errorf("get = %v, %v; want nil, true", v, ok)
	}
}

func TestLRUConcurrent(t *testing.T) {
	c := newLRU[int](50)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 1000 {
				k := strconv.Itoa((i * (g + 1)) % 100)
				c.put(k, i, time.Hour)
				c.get(k)
				if i%7 == 0 {
					c.remove(k)
				}
			}
		})
	}
	wg.Wait()
	if n := c.len(); n > 50 {
		t.Errorf("len %d over the bound", n)
	}
	if n := len(c.items); n != c.ll.Len() {
		t.Errorf("map and list disagree: %d vs %d", n, c.ll.Len())
	}
}
