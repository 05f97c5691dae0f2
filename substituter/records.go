package substituter

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/spec"
)

// Records (SPEC.md section 14.5): what serve stores in its first backend
// (uploads, and paths pulled from upstreams) is otherwise reached by no
// root, so a garbage collection would delete it. Serve records it in
// version 2 closures, one series per kind, UTC day and serve instance,
// tagged spec.RecordTag, each listing the paths stored that day (its
// roots) and what of their references the backend holds, with a push
// record: gc keeps them like any closure, and retention (--match
// 'uploaded.*' --keep-within 30d) drops old days. Paths are batched in
// memory and written every Interval (or sooner once FlushAt wait), and at
// Close; a record is read back and merged before it is written again, so
// a restarted instance adds to the day's records rather than replacing
// them. Only this instance writes its tags (the instance is in them), so
// replicas never race on one.

// RecordOptions configure the records of what a server stores. Zero
// values mean the documented defaults.
type RecordOptions struct {
	// Instance names this server in its record tags; each server writing
	// to the same repository needs its own. Default: the host name, as
	// spec.RecordInstance makes it.
	Instance string
	// Interval is how often pending paths are written; default
	// DefaultRecordInterval. It must stay well below the grace period of
	// the collections of the repository (SPEC.md 14.5).
	Interval time.Duration
	// FlushAt writes the pending paths at once when this many wait;
	// default 1,000.
	FlushAt int
	// MaxPending bounds the paths waiting to be recorded while writes
	// fail; past it an upload is refused (503) and a pulled path is not
	// recorded (logged, counted). Default 10,000 (about 10 MB).
	MaxPending int
	// MaxRoots bounds the paths one record lists as stored (its roots);
	// more go to the next record of the day. Default
	// DefaultRecordRoots.
	MaxRoots int
	// Now is the clock; default time.Now. (Tests set it.)
	Now func() time.Time
}

// Defaults of RecordOptions.
const (
	DefaultRecordInterval = time.Minute
	// DefaultRecordRoots keeps a record's annotations (its roots) small:
	// every version of a record is a referrer of its first root until
	// collected, listed with its annotations.
	DefaultRecordRoots = 128
)

// recordTools name serve in the push records of each kind of record.
var recordTools = map[string]string{spec.RecordUploaded: "nixoci serve --upload", spec.RecordPulled: "nixoci serve --upstream"}

// recordKey names a series of records: a kind and a UTC day.
type recordKey struct{ kind, day string }

// recorder batches what the server stores and writes it into records.
type recorder struct {
	s    *Server
	opts RecordOptions

	mu      sync.Mutex
	pending map[recordKey]map[string]artifact.PathArtifact // hash part -> artifact
	since   map[recordKey]time.Time                        // when the oldest pending path was added (real time)
	count   int
	kick    chan struct{}

	flushMu sync.Mutex             // one flush at a time
	next    map[recordKey]int      // the record of the series being filled, once known
	suspect map[recordKey]struct{} // series whose last write failed: check roots before the next

	stop chan struct{}
	done chan struct{}

	written *prometheus.CounterVec
	paths   *prometheus.CounterVec
	dropped *prometheus.CounterVec
	waiting prometheus.GaugeFunc
}

func newRecorder(s *Server, opts RecordOptions) (*recorder, error) {
	if opts.Instance == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("substituter: naming the record instance: %w", err)
		}
		opts.Instance = spec.RecordInstance(host)
	}
	if !spec.ValidInstance(opts.Instance) {
		return nil, fmt.Errorf("substituter: record instance %q: want at most %d of a-z, 0-9 and inner '-' (e.g. %q)", opts.Instance, spec.MaxInstanceLen, spec.RecordInstance(opts.Instance))
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultRecordInterval
	}
	if opts.FlushAt <= 0 {
		opts.FlushAt = 1000
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = 10000
	}
	if opts.MaxRoots <= 0 {
		opts.MaxRoots = DefaultRecordRoots
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &recorder{
		s: s, opts: opts,
		pending: map[recordKey]map[string]artifact.PathArtifact{},
		since:   map[recordKey]time.Time{},
		kick:    make(chan struct{}, 1),
		next:    map[recordKey]int{},
		suspect: map[recordKey]struct{}{},
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		written: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixoci_serve_records_total",
			Help: "Records of what serve stored (SPEC.md 14.5) written, by kind (uploaded, pulled) and outcome (written, failed: kept pending and tried again).",
		}, []string{"kind", "outcome"}),
		paths: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixoci_serve_recorded_paths_total",
			Help: "Paths serve stored that a record now lists, by kind.",
		}, []string{"kind"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixoci_serve_record_dropped_total",
			Help: "Paths serve stored but could not record, by kind and reason: full (too many pending while writes fail; an upload is refused), vanished (deleted before its record was written).",
		}, []string{"kind", "reason"}),
	}
	r.waiting = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "nixoci_serve_record_pending",
		Help: "Paths stored and waiting to be recorded.",
	}, func() float64 {
		r.mu.Lock()
		defer r.mu.Unlock()
		return float64(r.count)
	})
	for _, k := range []string{spec.RecordUploaded, spec.RecordPulled} {
		for _, o := range []string{"written", "failed"} {
			r.written.WithLabelValues(k, o)
		}
		r.paths.WithLabelValues(k)
	}
	return r, nil
}

func (r *recorder) collectors() []prometheus.Collector {
	return []prometheus.Collector{r.written, r.paths, r.dropped, r.waiting}
}

// start runs the flushes until close.
func (r *recorder) start() {
	go func() {
		defer close(r.done)
		t := time.NewTicker(r.opts.Interval)
		defer t.Stop()
		for {
			select {
			case <-r.stop:
				return
			case <-t.C:
			case <-r.kick:
			}
			// A write may take longer than an interval (a far registry,
			// a large record); the next waits for it.
			ctx, cancel := context.WithTimeout(context.Background(), max(r.opts.Interval*4, time.Minute))
			r.flush(ctx)
			cancel()
		}
	}()
}

// close ends the flushes and writes what is pending, within ctx.
func (r *recorder) close(ctx context.Context) error {
	close(r.stop)
	<-r.done
	if err := r.flush(ctx); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.count > 0 {
		return fmt.Errorf("%d stored paths are not recorded; a garbage collection may delete them", r.count)
	}
	return nil
}

// add notes that the path art was stored, as kind; it reports false if
// too many paths wait already (writes have been failing).
func (r *recorder) add(kind string, art artifact.PathArtifact) bool {
	key := recordKey{kind, r.opts.Now().UTC().Format(time.DateOnly)}
	hash := spec.PathTag(art.Info.StorePath)
	r.mu.Lock()
	set := r.pending[key]
	if _, ok := set[hash]; !ok && r.count >= r.opts.MaxPending {
		r.mu.Unlock()
		r.dropped.WithLabelValues(kind, "full").Inc()
		r.s.log.Error("a stored path cannot be recorded: too many wait while records fail to be written (see earlier errors); a garbage collection may delete it", "path", art.Info.StorePath, "kind", kind, "pending", r.opts.MaxPending)
		return false
	}
	if set == nil {
		set = map[string]artifact.PathArtifact{}
		r.pending[key] = set
		r.since[key] = time.Now()
	}
	if _, ok := set[hash]; !ok {
		r.count++
	}
	set[hash] = art
	full := r.count >= r.opts.FlushAt
	r.mu.Unlock()
	if full {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
	return true
}

// flush writes every pending series; what fails stays pending, to be
// tried at the next flush. It returns the first failure.
func (r *recorder) flush(ctx context.Context) error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	r.mu.Lock()
	batch := make(map[recordKey][]artifact.PathArtifact, len(r.pending))
	since := make(map[recordKey]time.Time, len(r.pending))
	for key, set := range r.pending {
		since[key] = r.since[key]
		for _, a := range set {
			batch[key] = append(batch[key], a)
		}
	}
	r.mu.Unlock()
	keys := make([]recordKey, 0, len(batch))
	for k := range batch {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b recordKey) int {
		if a.day != b.day {
			return strings.Compare(a.day, b.day)
		}
		return strings.Compare(a.kind, b.kind)
	})
	var first error
	for _, key := range keys {
		done, err := r.write(ctx, key, since[key], batch[key])
		r.forget(key, done)
		if err != nil {
			r.suspect[key] = struct{}{}
			r.written.WithLabelValues(key.kind, "failed").Inc()
			r.s.log.Error("cannot write the record of stored paths; they stay pending and are tried again: a garbage collection deletes what is not recorded within its grace period", "kind", key.kind, "day", key.day, "paths", len(batch[key])-len(done), "err", err)
			if first == nil {
				first = err
			}
			continue
		}
		delete(r.suspect, key)
	}
	return first
}

// forget drops from the pending paths those written (or given up) as
// done, unless stored again with another manifest meanwhile.
func (r *recorder) forget(key recordKey, done []artifact.PathArtifact) {
	r.mu.Lock()
	defer r.mu.Unlock()
	set := r.pending[key]
	for _, a := range done {
		hash := spec.PathTag(a.Info.StorePath)
		if cur, ok := set[hash]; ok && cur.Manifest.Digest == a.Manifest.Digest {
			delete(set, hash)
			r.count--
		}
	}
	if len(set) == 0 {
		delete(r.pending, key)
		delete(r.since, key)
	}
}

// write records arts, stored as key says, in the series' records: into
// the one being filled, merged with what it lists, then the next ones.
// It returns the paths recorded (or given up as vanished).
func (r *recorder) write(ctx context.Context, key recordKey, began time.Time, arts []artifact.PathArtifact) ([]artifact.PathArtifact, error) {
	var done []artifact.PathArtifact
	_, suspect := r.suspect[key]
	if suspect {
		// A write failed: a path may have been deleted meanwhile (a
		// registry refuses an index naming a manifest it lacks).
		kept, err := r.present(ctx, key, arts)
		if err != nil {
			return nil, err
		}
		for _, a := range arts {
			if !slices.ContainsFunc(kept, func(k artifact.PathArtifact) bool { return k.Info.StorePath == a.Info.StorePath }) {
				done = append(done, a)
			}
		}
		arts = kept
	}
	slices.SortFunc(arts, func(a, b artifact.PathArtifact) int { return strings.Compare(a.Info.StorePath, b.Info.StorePath) })
	for len(arts) > 0 {
		n := r.next[key]
		if n == 0 {
			n = 1
		}
		rec, err := readRecord(ctx, r.s, spec.RecordTag(key.kind, key.day, r.opts.Instance, n), r.opts.MaxRoots)
		if err != nil {
			return done, err
		}
		took, err := rec.add(ctx, r.s, arts, suspect)
		if err != nil {
			return done, err
		}
		if took > 0 {
			if err := rec.store(ctx, r.s, began, artifact.RecordOptions{Tool: recordTools[key.kind], At: r.opts.Now()}); err != nil {
				return done, err
			}
			r.written.WithLabelValues(key.kind, "written").Inc()
			r.paths.WithLabelValues(key.kind).Add(float64(took))
			done = append(done, arts[:took]...)
			arts = arts[took:]
		}
		if len(arts) > 0 || len(rec.roots) >= r.opts.MaxRoots {
			// This record is full (or has just been filled).
			n++
		}
		r.next[key] = n
	}
	return done, nil
}

// present keeps of arts those the first backend still holds.
func (r *recorder) present(ctx context.Context, key recordKey, arts []artifact.PathArtifact) ([]artifact.PathArtifact, error) {
	var kept []artifact.PathArtifact
	for _, a := range arts {
		_, ok, err := intactPath(ctx, r.s, spec.PathTag(a.Info.StorePath), true)
		switch {
		case err != nil:
			return nil, err
		case ok:
			kept = append(kept, a)
		default:
			r.dropped.WithLabelValues(key.kind, "vanished").Inc()
			r.s.log.Error("a path serve stored was deleted before its record was written (a garbage collection ran with a grace period shorter than the records took); it is not recorded", "path", a.Info.StorePath, "kind", key.kind)
		}
	}
	return kept, nil
}
