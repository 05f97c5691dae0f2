package serving

import (
	"fmt"
	"io"
	"sync"

	"github.com/opencontainers/go-digest"
)

// Pinned is a complete blob the cache keeps (never evicts) until
// Release, e.g. while it is being stored elsewhere.
type Pinned struct {
	c    *BlobCache
	d    digest.Digest
	once sync.Once
}

// Pin pins the blob with digest d if it is cached; nil if not.
func (c *BlobCache) Pin(d digest.Digest) *Pinned {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[d]; !ok {
		return nil
	}
	c.pins[d]++
	return &Pinned{c: c, d: d}
}

// Digest is the pinned blob's digest.
func (p *Pinned) Digest() digest.Digest { return p.d }

// Open reads the pinned blob from its start.
func (p *Pinned) Open() (io.ReadSeekCloser, error) {
	if rc := p.c.openEntry(p.d, ""); rc != nil {
		return rc, nil
	}
	return nil, fmt.Errorf("blob cache: %s is gone (the cache was closed)", p.d)
}

// Release unpins the blob; it may then be evicted. Calls after the first
// do nothing.
func (p *Pinned) Release() {
	p.once.Do(func() {
		p.c.mu.Lock()
		defer p.c.mu.Unlock()
		if p.c.pins[p.d]--; p.c.pins[p.d] <= 0 {
			delete(p.c.pins, p.d)
		}
	})
}
