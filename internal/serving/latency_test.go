package serving

import (
	"testing"
	"time"
)

func TestLatencyFloor(t *testing.T) {
	var l Latency
	if _, ok := l.Floor(); ok {
		t.Fatal("Floor before any answer: measured")
	}
	ms := time.Millisecond
	tests := []struct {
		name    string
		observe []time.Duration
		want    time.Duration
	}{
		{"one answer", []time.Duration{20 * ms}, 20 * ms},
		{"the fastest, not the latest", []time.Duration{40 * ms, 21 * ms, 90 * ms}, 21 * ms},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l Latency
			for _, d := range tt.observe {
				l.Observe(d)
			}
			if got, ok := l.Floor(); !ok || got != tt.want {
				t.Fatalf("Floor = %v, %v; want %v, true", got, ok, tt.want)
			}
		})
	}
	t.Run("a fast answer is forgotten after a window of slower ones", func(t *testing.T) {
		var l Latency
		l.Observe(ms)
		for range LatencyWindow - 1 {
			l.Observe(20 * ms)
		}
		if got, _ := l.Floor(); got != ms {
			t.Fatalf("Floor within the window = %v, want %v", got, ms)
		}
		l.Observe(30 * ms)
		if got, _ := l.Floor(); got != 20*ms {
			t.Fatalf("Floor once the fast answer left the window = %v, want %v", got, 20*ms)
		}
	})
}
