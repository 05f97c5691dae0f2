package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
)

// openTarget parses and opens a target string; an empty string means the
// default store.
func openTarget(ctx context.Context, s string, plainHTTP, create bool, more ...targetOption) (backend.Ref, backend.Target, error) {
	var ref backend.Ref
	var err error
	if s == "" {
		ref, err = backend.DefaultStore()
	} else {
		ref, err = backend.ParseRef(s)
	}
	if err != nil {
		return ref, nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	t, err := openRef(ctx, ref, plainHTTP, create, more...)
	return ref, t, err
}

// storeHint explains an error about ref when ref is in the default
// store and something was not found there: a tag alone (TAG, :TAG)
// names a closure of the default store, which may not be what was meant.
func storeHint(err error, ref backend.Ref) error {
	if !errors.Is(err, errdef.ErrNotFound) {
		return err
	}
	if store, serr := backend.DefaultStore(); serr != nil || ref.Layout != store.Layout {
		return err
	}
	what := "a tag alone"
	if ref.Reference != "" {
		what = ref.Reference
	}
	return fmt.Errorf("%w; %s is a tag of the default store %s, where 'nixoci push' puts closures unless --to says otherwise (name another target as %s)",
		err, what, ref.Base(), backend.TargetForms)
}

// openRef opens a parsed target.
func openRef(ctx context.Context, ref backend.Ref, plainHTTP, create bool, more ...targetOption) (backend.Target, error) {
	opts := backend.Options{PlainHTTP: plainHTTP, Create: create, UserAgent: "nixoci/" + version}
	for _, f := range more {
		f(&opts)
	}
	return backend.Open(ctx, ref, opts)
}

// targetOption sets more of how a target is opened (see upload.go).
type targetOption func(*backend.Options)

// isTerminal reports whether w is a terminal (progress is shown only then).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// showProgress redraws one status line on a terminal until stop is called.
func showProgress(w io.Writer, verb string, p *artifact.Progress) (stop func()) {
	start := time.Now()
	return showStatus(w, func() string {
		secs := time.Since(start).Seconds()
		return fmt.Sprintf("%s: %d/%d paths (%d already stored), %s NAR, %s transferred, %s/s",
			verb, p.PathsDone.Load(), p.PathsTotal.Load(), p.PathsReused.Load(),
			human(p.NarBytes.Load()), human(p.Transferred.Load()), human(int64(float64(p.Transferred.Load())/secs)))
	})
}

// showStatus redraws the line status returns on a terminal, every 200 ms,
// until stop is called (which clears it); elsewhere it shows nothing.
func showStatus(w io.Writer, status func() string) (stop func()) {
	if !isTerminal(w) {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(w, "\r\033[K")
				return
			case <-t.C:
				fmt.Fprint(w, "\r\033[K"+status())
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// human formats a byte count.
func human(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}

// parseSize reads a byte count: a number with an optional unit (B, kB,
// MB, GB, KiB, MiB, GiB, TiB), e.g. "512MiB" or "2GB".
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"kB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range units {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || v*float64(mult) > 1<<62 {
		return 0, fmt.Errorf("%q is not a size (e.g. 512MiB, 2GiB, 0)", s)
	}
	return int64(v * float64(mult)), nil
}

// recordOptions is what push records say of this nixoci (and, if asked,
// of this host).
func recordOptions(host bool) artifact.RecordOptions {
	o := artifact.RecordOptions{Tool: "nixoci/" + version}
	if host {
		o.Host, _ = os.Hostname()
	}
	return o
}
