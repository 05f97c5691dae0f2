package serving

import (
	"strconv"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable lru clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func newTestLRU(max int) (*LRU[int], *fakeClock) {
	c := NewLRU[int](max)
	clock := &fakeClock{t: time.Unix(1000, 0)}
	c.now = clock.now
	return c, clock
}

func TestLRUEvictsLeastRecentlyUsed(t *testing.T) {
	c, _ := newTestLRU(3)
	for i := range 3 {
		c.Put(strconv.Itoa(i), i, time.Hour)
	}
	c.Get("0") // 0 is now the most recent; 1 the oldest
	c.Put("3", 3, time.Hour)
	if c.Len() != 3 {
		t.Errorf("len %d, want 3", c.Len())
	}
	if _, ok := c.Get("1"); ok {
		t.Error("the least recently used entry survived")
	}
	for _, k := range []string{"0", "2", "3"} {
		if v, ok := c.Get(k); !ok || strconv.Itoa(v) != k {
			t.Errorf("get(%s) = %d, %v", k, v, ok)
		}
	}
	// Updating an entry does not grow the cache and makes it recent.
	c.Put("0", 10, time.Hour) // recency now: 0, 3, 2
	c.Put("4", 4, time.Hour)
	if v, ok := c.Get("0"); !ok || v != 10 {
		t.Errorf("updated entry: %d, %v", v, ok)
	}
	if c.Len() != 3 {
		t.Errorf("len %d after update, want 3", c.Len())
	}
	if _, ok := c.Get("2"); ok {
		t.Error("2 should have been evicted")
	}
}

func TestLRUExpiry(t *testing.T) {
	c, clock := newTestLRU(10)
	c.Put("short", 1, time.Second)
	c.Put("long", 2, time.Minute)
	clock.t = clock.t.Add(time.Second)
	if v, ok := c.Get("short"); !ok || v != 1 {
		t.Errorf("entry gone at its expiry instant: %d %v", v, ok)
	}
	clock.t = clock.t.Add(time.Nanosecond)
	if _, ok := c.Get("short"); ok {
		t.Error("expired entry returned")
	}
	if c.Len() != 1 {
		t.Errorf("expired entry kept: len %d", c.Len())
	}
	if v, ok := c.Get("long"); !ok || v != 2 {
		t.Errorf("live entry: %d %v", v, ok)
	}
	// put refreshes the expiry.
	c.Put("long", 3, time.Second)
	clock.t = clock.t.Add(2 * time.Second)
	if _, ok := c.Get("long"); ok {
		t.Error("re-put with a shorter TTL kept the old expiry")
	}
}

func TestLRUDisabled(t *testing.T) {
	for _, tc := range []struct {
		max int
		ttl time.Duration
	}{{0, time.Hour}, {-1, time.Hour}, {10, 0}, {10, -time.Second}} {
		c, _ := newTestLRU(tc.max)
		c.Put("k", 1, tc.ttl)
		if _, ok := c.Get("k"); ok || c.Len() != 0 {
			t.Errorf("max %d ttl %v: entry stored", tc.max, tc.ttl)
		}
	}
}

func TestLRURemove(t *testing.T) {
	c, _ := newTestLRU(10)
	c.Put("a", 1, time.Hour)
	c.Remove("a")
	c.Remove("never")
	if _, ok := c.Get("a"); ok || c.Len() != 0 {
		t.Error("removed entry still there")
	}
}

// TestLRUNilValues: a nil value (a remembered "not found") is a hit.
func TestLRUNilValues(t *testing.T) {
	c := NewLRU[*Backend](2)
	c.Put("absent", nil, time.Hour)
	if v, ok := c.Get("absent"); !ok || v != nil {
		t.Errorf("get = %v, %v; want nil, true", v, ok)
	}
}

func TestLRUConcurrent(t *testing.T) {
	c := NewLRU[int](50)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 1000 {
				k := strconv.Itoa((i * (g + 1)) % 100)
				c.Put(k, i, time.Hour)
				c.Get(k)
				if i%7 == 0 {
					c.Remove(k)
				}
			}
		})
	}
	wg.Wait()
	if n := c.Len(); n > 50 {
		t.Errorf("len %d over the bound", n)
	}
	if n := len(c.items); n != c.ll.Len() {
		t.Errorf("map and list disagree: %d vs %d", n, c.ll.Len())
	}
}

// TestLRUGetOrAdd: concurrent callers for one key share one value; an
// expired entry is replaced; the bound holds.
func TestLRUGetOrAdd(t *testing.T) {
	c, clock := newTestLRU(2)
	var made sync.Map
	var wg sync.WaitGroup
	values := make([]int, 64)
	for i := range values {
		wg.Go(func() {
			values[i] = c.GetOrAdd("k", time.Minute, func() int { made.Store(i, true); return i })
		})
	}
	wg.Wait()
	n := 0
	made.Range(func(any, any) bool { n++; return true })
	if n != 1 {
		t.Errorf("%d values made for one key, want 1", n)
	}
	for _, v := range values {
		if v != values[0] {
			t.Fatalf("callers got different values: %d and %d", v, values[0])
		}
	}
	clock.t = clock.t.Add(time.Minute + time.Second)
	if v := c.GetOrAdd("k", time.Minute, func() int { return -1 }); v != -1 {
		t.Errorf("expired entry returned: %d", v)
	}
	c.GetOrAdd("a", time.Minute, func() int { return 1 })
	c.GetOrAdd("b", time.Minute, func() int { return 2 })
	if c.Len() != 2 {
		t.Errorf("len %d, want the bound 2", c.Len())
	}
}
