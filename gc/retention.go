package gc

import (
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Validate checks the patterns, and that the Retention keeps some tags
// or says it keeps none.
func (r *Retention) Validate() error {
	if r.KeepLast < 0 {
		return fmt.Errorf("keep-last %d: must not be negative", r.KeepLast)
	}
	if r.KeepWithin < 0 {
		return fmt.Errorf("keep-within %v: must not be negative", r.KeepWithin)
	}
	switch keeps := r.KeepLast > 0 || r.KeepWithin > 0; {
	case keeps && r.KeepNone:
		return fmt.Errorf("keep-none with keep-last %d or keep-within %v: choose one", r.KeepLast, r.KeepWithin)
	case !keeps && !r.KeepNone:
		return fmt.Errorf("%w: keep-last and keep-within are 0; set KeepNone to drop them all", ErrKeepsNothing)
	}
	for _, m := range r.Match {
		if _, err := path.Match(m, ""); err != nil {
			return fmt.Errorf("match pattern %q: %w", m, err)
		}
	}
	return nil
}

// applies reports whether retention decides about tag.
func (r *Retention) applies(tag string) bool {
	if len(r.Match) == 0 {
		return true
	}
	for _, m := range r.Match {
		if ok, _ := path.Match(m, tag); ok {
			return true
		}
	}
	return false
}

// decide splits the closure tags retention applies to into kept and
// dropped, newest first. pushed gives each closure's push time (zero if
// unknown: the oldest); ties go by tag.
func (r *Retention) decide(tags map[string]digest.Digest, pushed func(digest.Digest) time.Time, now time.Time) (kept, dropped []TagTime) {
	var all []TagTime
	for tag, d := range tags {
		if r.applies(tag) {
			all = append(all, TagTime{Tag: tag, Digest: d, Pushed: pushed(d)})
		}
	}
	slices.SortFunc(all, func(a, b TagTime) int {
		if c := b.Pushed.Compare(a.Pushed); c != 0 {
			return c
		}
		return strings.Compare(a.Tag, b.Tag)
	})
	for i, tt := range all {
		recent := r.KeepWithin > 0 && !tt.Pushed.IsZero() && now.Sub(tt.Pushed) <= r.KeepWithin
		if i < r.KeepLast || recent {
			kept = append(kept, tt)
		} else {
			dropped = append(dropped, tt)
		}
	}
	return kept, dropped
}
