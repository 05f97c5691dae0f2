package substituter

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixoci/nixoci/internal/serving"
)

// NARAhead says where NARs are fetched ahead of a client into the blob
// cache (see narAhead).
type NARAhead int

const (
	// NARAheadAuto fetches ahead from the sources that are far (see
	// aheadPays).
	NARAheadAuto NARAhead = iota
	// NARAheadOn fetches ahead from every source.
	NARAheadOn
	// NARAheadOff never fetches ahead.
	NARAheadOff
)

// ParseNARAhead reads "auto", "on" or "off".
func ParseNARAhead(s string) (NARAhead, error) {
	switch s {
	case "auto":
		return NARAheadAuto, nil
	case "on":
		return NARAheadOn, nil
	case "off":
		return NARAheadOff, nil
	}
	return 0, fmt.Errorf("%q: want auto, on or off", s)
}

// DefaultNARAheadLatency is the default Options.NARAheadLatency.
const DefaultNARAheadLatency = 3 * time.Millisecond

// Fetching a NAR ahead pays only where a source is far: it saves the
// client a round trip per NAR, and costs a copy of every byte into the
// blob cache, and the CPU of copying them (on a small machine, taken
// from the client). From an image layout or a registry on the same host
// (a fraction of a millisecond to a few, see serving.Latency) NARs
// stream at once and the copy is all cost (issue 23 measured serve
// fetching ahead from a layout 1.5× as slow as without on a 1 GB
// closure; bench/ahead.sh, BENCHMARKS.md, measures both). So in auto mode a source's NARs are fetched ahead only
// if the fastest of its latest answers took at least threshold: the
// distance of a registry in another building or region, not the time a
// busy registry next door takes to answer. A source not measured yet
// counts as far: being wrong there costs a round trip per NAR, being
// wrong next door only a copy, and the first answers measure it.
func aheadPays(mode NARAhead, threshold time.Duration, floor time.Duration, measured bool) bool {
	switch mode {
	case NARAheadOn:
		return true
	case NARAheadOff:
		return false
	}
	return !measured || floor >= threshold
}

// aheadGate applies aheadPays per source, logging each source's
// decision when it changes and counting them.
type aheadGate struct {
	mode      NARAhead
	threshold time.Duration
	log       *slog.Logger
	mu        sync.Mutex
	last      map[*serving.Latency]bool // per source, the decision last logged
	decisions *prometheus.CounterVec
}

func newAheadGate(mode NARAhead, threshold time.Duration, log *slog.Logger) *aheadGate {
	if threshold <= 0 {
		threshold = DefaultNARAheadLatency
	}
	return &aheadGate{
		mode: mode, threshold: threshold, log: log, last: map[*serving.Latency]bool{},
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixoci_nar_ahead_total",
			Help: "NARs a substituting client's narinfos named, by whether they were fetched ahead into the blob cache (fetched) or left to stream when asked because their source is near (near); none with --nar-ahead off.",
		}, []string{"decision"}),
	}
}

// pays reports whether to fetch ahead a NAR of the source named source,
// whose answers l measures.
func (g *aheadGate) pays(source string, l *serving.Latency) bool {
	floor, measured := l.Floor()
	ok := aheadPays(g.mode, g.threshold, floor, measured)
	if ok {
		g.decisions.WithLabelValues("fetched").Inc()
	} else {
		g.decisions.WithLabelValues("near").Inc()
	}
	if g.mode != NARAheadAuto || !measured {
		return ok
	}
	g.mu.Lock()
	last, seen := g.last[l]
	g.last[l] = ok
	g.mu.Unlock()
	if !seen || last != ok {
		verb := "fetched ahead"
		if !ok {
			verb = "streamed when asked, not fetched ahead"
		}
		g.log.Info("NARs of "+source+" are "+verb, "fastest_recent_answer", floor.String(), "nar_ahead_latency", g.threshold.String())
	}
	return ok
}
