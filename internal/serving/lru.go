package serving

import (
	"container/list"
	"sync"
	"time"
)

// LRU is a size-bounded map whose entries also expire: the servers'
// in-memory caches (narinfos, blob locations, verified files, composed
// images). Safe for concurrent use.
type LRU[V any] struct {
	mu    sync.Mutex
	max   int
	ll    *list.List
	items map[string]*list.Element
	now   func() time.Time
}

type lruEntry[V any] struct {
	key     string
	value   V
	expires time.Time
}

// NewLRU makes an LRU of at most max entries; max <= 0 keeps nothing.
func NewLRU[V any](max int) *LRU[V] {
	return &LRU[V]{max: max, ll: list.New(), items: map[string]*list.Element{}, now: time.Now}
}

// Get returns the value of key if it is there and has not expired.
func (c *LRU[V]) Get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var zero V
	el, ok := c.items[key]
	if !ok {
		return zero, false
	}
	e := el.Value.(*lruEntry[V])
	if c.now().After(e.expires) {
		c.ll.Remove(el)
		delete(c.items, key)
		return zero, false
	}
	c.ll.MoveToFront(el)
	return e.value, true
}

// Put sets key to v for ttl, evicting the least recently used entry
// when full; ttl <= 0 stores nothing.
func (c *LRU[V]) Put(key string, v V, ttl time.Duration) {
	if c.max <= 0 || ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	exp := c.now().Add(ttl)
	if el, ok := c.items[key]; ok {
		e := el.Value.(*lruEntry[V])
		e.value, e.expires = v, exp
		c.ll.MoveToFront(el)
		return
	}
	c.items[key] = c.ll.PushFront(&lruEntry[V]{key, v, exp})
	c.evictLocked()
}

// evictLocked drops the least recently used entries beyond max.
func (c *LRU[V]) evictLocked() {
	for c.ll.Len() > c.max {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.items, old.Value.(*lruEntry[V]).key)
	}
}

// GetOrAdd returns the value of key, or, if it has none (or it
// expired), stores fresh() under key for ttl and returns it: one step,
// so concurrent callers for one key get one value.
func (c *LRU[V]) GetOrAdd(key string, ttl time.Duration, fresh func() V) V {
	if c.max <= 0 || ttl <= 0 {
		return fresh()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if el, ok := c.items[key]; ok {
		e := el.Value.(*lruEntry[V])
		if !now.After(e.expires) {
			c.ll.MoveToFront(el)
			return e.value
		}
		e.value, e.expires = fresh(), now.Add(ttl)
		c.ll.MoveToFront(el)
		return e.value
	}
	v := fresh()
	c.items[key] = c.ll.PushFront(&lruEntry[V]{key, v, now.Add(ttl)})
	c.evictLocked()
	return v
}

// Remove forgets key.
func (c *LRU[V]) Remove(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.ll.Remove(el)
		delete(c.items, key)
	}
}

// Len is the number of entries held, expired ones included until looked up.
func (c *LRU[V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

// Max is the bound on entries given to NewLRU.
func (c *LRU[V]) Max() int { return c.max }

// Keys returns the keys held (expired ones included), in no order.
func (c *LRU[V]) Keys() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]string, 0, len(c.items))
	for k := range c.items {
		keys = append(keys, k)
	}
	return keys
}
