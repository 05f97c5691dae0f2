package serving

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nixoci/nixoci/backend"
)

// Backend is one place artifacts are read from.
type Backend struct {
	Name   string // shown in logs, e.g. "oci:/srv/nix" or "ghcr.io/me/nix"
	Target backend.Target
}

// BackendOptions configure Backends. Zero values mean the documented
// defaults.
type BackendOptions struct {
	// Timeout bounds each metadata request to a backend (narinfo and
	// manifest lookups, blob lookups); default 20s. Blob bodies are not
	// bounded in total.
	Timeout time.Duration
	// MaxRequests bounds concurrent backend operations; default 64.
	MaxRequests int
	// CacheSize is the number of blob locations and verified blob files
	// kept in memory; default 50000.
	CacheSize int
	// CacheTTL is how long a blob location is remembered; default 10
	// minutes.
	CacheTTL time.Duration
	// Metrics receives backend, cache and blob counts; default a new
	// Metrics.
	Metrics *Metrics
}

// Backends are the places the servers of one listener read from, tried
// in order, with what every handler shares: the bound on concurrent
// backend requests, the metadata timeout, where blobs were found, which
// blob files were verified whole, and the metrics.
type Backends struct {
	list     []Backend
	opts     BackendOptions
	sem      chan struct{}
	blobs    *LRU[BlobLocation] // digest -> where the blob is
	verified *LRU[fileID]       // digest -> identity of the file hashed whole
	latency  []*Latency         // per backend, of its blob downloads

	resolveBlob, fetchBlob *Op
	blobCache              *Cache
}

// NewBackends makes Backends of list, which must not be empty.
func NewBackends(list []Backend, opts BackendOptions) (*Backends, error) {
	if len(list) == 0 {
		return nil, errors.New("serving: no backend")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 20 * time.Second
	}
	if opts.MaxRequests <= 0 {
		opts.MaxRequests = 64
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = 50000
	}
	if opts.CacheTTL == 0 {
		opts.CacheTTL = 10 * time.Minute
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	return &Backends{
		list:     list,
		opts:     opts,
		sem:      make(chan struct{}, opts.MaxRequests),
		blobs:    NewLRU[BlobLocation](opts.CacheSize),
		verified: NewLRU[fileID](opts.CacheSize),
		latency:  newLatencies(len(list)),

		resolveBlob: opts.Metrics.Op("resolve_blob"),
		fetchBlob:   opts.Metrics.Op("fetch_blob"),
		blobCache:   opts.Metrics.Cache("blob"),
	}, nil
}

// List returns the backends in order; the caller must not change it.
func (b *Backends) List() []Backend { return b.list }

// Latency is how long backend i took to answer its latest blob
// downloads, until their first byte (see Latency).
func (b *Backends) Latency(i int) *Latency { return b.latency[i] }

func newLatencies(n int) []*Latency {
	l := make([]*Latency, n)
	for i := range l {
		l[i] = &Latency{}
	}
	return l
}

// Timeout is the bound on one metadata request.
func (b *Backends) Timeout() time.Duration { return b.opts.Timeout }

// Metrics returns the metrics every handler over b counts into.
func (b *Backends) Metrics() *Metrics { return b.opts.Metrics }

// acquire takes a backend slot; it fails when ctx ends first.
func (b *Backends) acquire(ctx context.Context) (release func(), err error) {
	select {
	case b.sem <- struct{}{}:
		return func() { <-b.sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Ask asks each backend in order, one request at a time within the bound
// on backend concurrency, counted and timed as op, and returns the first answer with
// the backend's index. "Not found" everywhere is found false with a nil
// error; failures of backends that had no answer are joined in the error.
func Ask[T any](ctx context.Context, b *Backends, op *Op, ask func(context.Context, backend.Target) (T, error)) (v T, index int, found bool, err error) {
	var errs []error
	for i := range b.list {
		got, err := AskOne(ctx, b, i, op, ask)
		if IsNotFound(err) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return got, i, true, nil
	}
	return v, 0, false, errors.Join(errs...)
}

// AskOne asks backend i, within the bound on backend concurrency,
// counted and timed as op. An error other than "not found" is prefixed
// with the backend's name.
func AskOne[T any](ctx context.Context, b *Backends, i int, op *Op, ask func(context.Context, backend.Target) (T, error)) (T, error) {
	release, err := b.acquire(ctx)
	if err != nil {
		var zero T
		return zero, err
	}
	start := time.Now()
	got, err := ask(ctx, b.list[i].Target)
	release()
	op.Observe(start, err)
	if err != nil && !IsNotFound(err) {
		err = fmt.Errorf("%s: %w", b.list[i].Name, err)
	}
	return got, err
}

// Ping checks every backend at once, within the metadata timeout, and
// returns the errors of those that failed by backend index (empty: all
// answer).
func (b *Backends) Ping(ctx context.Context) map[int]error {
	ctx, cancel := context.WithTimeout(ctx, b.opts.Timeout)
	defer cancel()
	errs := make([]error, len(b.list))
	var wg sync.WaitGroup
	for i, be := range b.list {
		wg.Go(func() { errs[i] = be.Target.Ping(ctx) })
	}
	wg.Wait()
	failed := map[int]error{}
	for i, err := range errs {
		if err != nil {
			failed[i] = err
		}
	}
	return failed
}
