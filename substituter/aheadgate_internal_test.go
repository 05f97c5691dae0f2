package substituter

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nixoci/nixoci/internal/serving"
)

// TestAheadPays checks the rule deciding where NARs are fetched ahead,
// on injected measurements (no timing).
func TestAheadPays(t *testing.T) {
	ms := time.Millisecond
	threshold := DefaultNARAheadLatency
	tests := []struct {
		name    string
		mode    NARAhead
		answers []time.Duration // the source's latest answers
		want    bool
	}{
		{"auto, not measured yet: as far", NARAheadAuto, nil, true},
		{"auto, image layout (file opens)", NARAheadAuto, []time.Duration{20 * time.Microsecond, 35 * time.Microsecond}, false},
		{"auto, registry on the same host", NARAheadAuto, []time.Duration{ms, 2 * ms, ms}, false},
		{"auto, registry next door under load: its fastest answer counts", NARAheadAuto, []time.Duration{40 * ms, 1 * ms, 25 * ms}, false},
		{"auto, registry 20 ms away", NARAheadAuto, []time.Duration{21 * ms, 24 * ms, 60 * ms}, true},
		{"auto, at the threshold", NARAheadAuto, []time.Duration{threshold}, true},
		{"on, layout", NARAheadOn, []time.Duration{20 * time.Microsecond}, true},
		{"off, far", NARAheadOff, []time.Duration{50 * ms}, false},
		{"off, not measured", NARAheadOff, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l serving.Latency
			for _, d := range tt.answers {
				l.Observe(d)
			}
			g := newAheadGate(tt.mode, 0, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if got := g.pays("test", &l); got != tt.want {
				floor, measured := l.Floor()
				t.Fatalf("pays = %v, want %v (fastest %v, measured %v)", got, tt.want, floor, measured)
			}
		})
	}
}

// TestAheadGateFollowsTheSource checks that the decision changes as a
// source's answers do: a source first measured far and then answering
// fast (the registry moved next door) stops being fetched ahead.
func TestAheadGateFollowsTheSource(t *testing.T) {
	g := newAheadGate(NARAheadAuto, 5*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var l serving.Latency
	l.Observe(30 * time.Millisecond)
	if !g.pays("r", &l) {
		t.Fatal("far source not fetched ahead")
	}
	l.Observe(time.Millisecond)
	if g.pays("r", &l) {
		t.Fatal("source answering in 1ms still fetched ahead with a 5ms threshold")
	}
}

func TestParseNARAhead(t *testing.T) {
	for s, want := range map[string]NARAhead{"auto": NARAheadAuto, "on": NARAheadOn, "off": NARAheadOff} {
		if got, err := ParseNARAhead(s); err != nil || got != want {
			t.Errorf("ParseNARAhead(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseNARAhead("yes"); err == nil {
		t.Error("ParseNARAhead(yes): no error")
	}
}
