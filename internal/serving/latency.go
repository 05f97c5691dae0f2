package serving

import (
	"sync"
	"time"
)

// LatencyWindow is how many of a source's latest answers Latency keeps.
const LatencyWindow = 32

// Latency keeps how long a source took to answer its latest
// single-request operations (a blob's GET until its headers, a HEAD, an
// upstream's narinfo), to tell a source far away from one next door.
// Its Floor is the fastest of them: load on either side only adds to an
// answer's time, while no answer comes faster than the round trip, so
// the fastest of a few dozen is the distance, whatever else the machine
// does. Fixed size; safe for concurrent use.
type Latency struct {
	mu      sync.Mutex
	samples [LatencyWindow]time.Duration
	n, next int
}

// Observe records one answer that took d.
func (l *Latency) Observe(d time.Duration) {
	l.mu.Lock()
	l.samples[l.next] = d
	l.next = (l.next + 1) % LatencyWindow
	l.n = min(l.n+1, LatencyWindow)
	l.mu.Unlock()
}

// Floor returns the fastest of the answers kept; false before any.
func (l *Latency) Floor() (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n == 0 {
		return 0, false
	}
	floor := l.samples[0]
	for _, d := range l.samples[1:l.n] {
		floor = min(floor, d)
	}
	return floor, true
}
