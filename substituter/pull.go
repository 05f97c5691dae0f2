package substituter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/codec"
	"github.com/nixoci/nixoci/internal/serving"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// Pull-through (SPEC.md section 14): upstream binary caches are the last
// sources of the resolver. A path no backend has is asked of each
// upstream in order; its narinfo is served only if it verifies (see
// check). Its NAR is pulled when a client asks for it (or when the NARs
// of its narinfos are fetched ahead of a substituting client): one fill
// of the blob cache per NAR, which every client asking for it reads as
// it arrives, verified against FileHash and FileSize, and decompressed
// and parsed strictly to check NarHash and NarSize, as `push
// --from-cache` reads it. Only a NAR that verified whole is stored in the
// first backend, unchanged (blobs, then manifest, then tag), from the
// file the blob cache keeps pinned until then.

// PullOptions make the server pull through upstream binary caches.
type PullOptions struct {
	// Upstreams are asked in order, after every backend.
	Upstreams []Upstream
	// Keys verify upstream narinfos: one signature must verify against
	// one of them, or the path is refused (answered 502 and logged).
	// They are also trusted keys of the trust policy (see trustPolicy):
	// what an upstream key signed, serve signs too, wherever it is held.
	Keys []narinfo.PublicKey
	// Unverified serves and stores upstream paths whatever their
	// signatures (Keys are not checked). Only for upstreams reached over
	// a channel nobody else can write to; serve then signs them only if
	// they verify against a trusted key anyway.
	Unverified bool
	// MaxNARSize bounds an upstream path's FileSize and NarSize; default
	// DefaultMaxUpstreamNAR.
	MaxNARSize int64
	// StoreJobs bounds the paths stored in the first backend at once;
	// default 8.
	StoreJobs int
	// MaxPendingStores bounds the paths waiting to be stored (each holds
	// its NAR pinned in the blob cache); more are not stored (counted,
	// logged) and are pulled again when asked next. Default 1024.
	MaxPendingStores int
}

// StoredPath is a store path the server stored in its first backend.
type StoredPath struct {
	Path artifact.PathArtifact
	// From is where it came from: "upstream <name>", or "upload".
	From string
}

// puller pulls paths through from upstreams.
type puller struct {
	s        *Server
	opts     PullOptions
	bc       *serving.BlobCache
	nars     *serving.LRU[upstreamNAR] // NAR digest -> where it is, until stored
	stores   chan struct{}
	pending  atomic.Int64
	decoders *semaphore.Weighted // of decodeMemory
	closures *closures
	health   *upstreamHealth
	// ctx ends background work (stores, closures) at close, which waits
	// for it (work).
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex // orders background against close
	work   sync.WaitGroup

	narinfos *prometheus.CounterVec
	fills    *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	stored   *prometheus.CounterVec

	closuresStored prometheus.Counter
}

func newPuller(s *Server, opts PullOptions, bc *serving.BlobCache) (*puller, error) {
	if len(opts.Upstreams) == 0 {
		return nil, errors.New("substituter: pull-through without an upstream")
	}
	if bc == nil {
		return nil, errors.New("substituter: pull-through needs a blob cache (NARs are verified there before they are stored)")
	}
	if len(opts.Keys) == 0 && !opts.Unverified {
		return nil, errors.New("substituter: pull-through without upstream keys: name the upstreams' public keys, or opt out of verifying them")
	}
	if opts.MaxNARSize <= 0 {
		opts.MaxNARSize = DefaultMaxUpstreamNAR
	}
	if opts.StoreJobs <= 0 {
		opts.StoreJobs = 8
	}
	if opts.MaxPendingStores <= 0 {
		opts.MaxPendingStores = 1024
	}
	for i := range opts.Upstreams {
		if opts.Upstreams[i].Cache == nil {
			return nil, fmt.Errorf("substituter: upstream %d has no cache", i)
		}
		if opts.Upstreams[i].Name == "" {
			opts.Upstreams[i].Name = opts.Upstreams[i].Cache.URL()
		}
		opts.Upstreams[i].latency = &serving.Latency{}
	}
	p := &puller{
		s: s, opts: opts, bc: bc,
		nars:     serving.NewLRU[upstreamNAR](s.opts.CacheSize),
		stores:   make(chan struct{}, opts.StoreJobs),
		decoders: semaphore.NewWeighted(decodeMemory),
		narinfos: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixoci_upstream_narinfos_total",
			Help: "Narinfos asked of upstreams (for paths no backend has), by upstream and result: found (a hit), not_found (a miss), failed (5xx, timeout), refused (signature or content checks failed).",
		}, []string{"upstream", "result"}),
		fills: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixoci_upstream_nars_total",
			Help: "NARs pulled from upstreams into the blob cache, by upstream and outcome: ok (verified whole), failed (transfer or verification), skipped (no room: served from upstream, not stored).",
		}, []string{"upstream", "outcome"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixoci_upstream_bytes_total",
			Help: "Bytes of NARs received from upstreams.",
		}, []string{"upstream"}),
		stored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixoci_upstream_stores_total",
			Help: "Paths pulled from upstreams and stored in the first backend, by outcome: stored, present (the backend had it meanwhile), failed, skipped (too many waiting).",
		}, []string{"outcome"}),
	}
	p.closuresStored = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "nixoci_upstream_closures_total",
		Help: "Closure artifacts stored for the roots clients substituted from upstreams (see SPEC.md section 14.4).",
	})
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.closures = newClosures(p)
	p.health = newUpstreamHealth(opts.Upstreams, s.log)
	for _, up := range opts.Upstreams {
		for _, r := range []string{"found", "not_found", "failed", "refused"} {
			p.narinfos.WithLabelValues(up.Name, r)
		}
		p.bytes.WithLabelValues(up.Name)
	}
	return p, nil
}

func (p *puller) collectors() []prometheus.Collector {
	return []prometheus.Collector{p.narinfos, p.fills, p.bytes, p.stored, p.closuresStored, p.health.up}
}

// sources are the resolver's sources for the upstreams, in order.
func (p *puller) sources() []Source {
	var out []Source
	for i := range p.opts.Upstreams {
		out = append(out, upstreamSource{p, &p.opts.Upstreams[i]})
	}
	return out
}

func (p *puller) countNarInfo(up *Upstream, result string) {
	p.narinfos.WithLabelValues(up.Name, result).Inc()
}

// found remembers where the NAR of a path found upstream is, until it is
// stored.
func (p *puller) found(loc upstreamNAR) {
	p.nars.Put(loc.desc.Digest.String(), loc, p.s.opts.CacheTTL)
}

// decodeMemory bounds the memory the decoders of the NARs being pulled
// hold at once: each decoder's dictionary or window fits its NarSize
// (codec.NewReaderSize; a few KiB for most paths, at most 64 MiB for xz
// and 128 MiB for zstd), and a pull waits for its share before it
// starts.
const decodeMemory = 128 << 20

// fill is the blob-cache fill of the NAR at loc: read from the upstream,
// verified whole (WriteNAR), then stored.
func (p *puller) fill(loc upstreamNAR) serving.Fill {
	return serving.Fill{
		Desc: loc.desc,
		Copy: func(ctx context.Context, w io.Writer) error {
			share := min(decodeMemory, codec.DecoderMemory(spec.Compression(loc.info.Compression), int64(loc.info.NarSize)))
			if err := p.decoders.Acquire(ctx, share); err != nil {
				return err
			}
			defer p.decoders.Release(share)
			_, err := loc.up.Cache.WriteNAR(ctx, loc.fetchInfo(), countingWriter{w, p.bytes.WithLabelValues(loc.up.Name)})
			return err
		},
		Timeout: fillTimeout(loc.desc.Size),
		Done:    func(pin *serving.Pinned, err error) { p.filled(loc, pin, err) },
	}
}

// fillTimeout bounds the pull of a NAR of size bytes: 10 minutes, or
// as long as it takes at 1 MiB/s.
func fillTimeout(size int64) time.Duration {
	return max(10*time.Minute, time.Duration(size>>20)*time.Second)
}

type countingWriter struct {
	w io.Writer
	c prometheus.Counter
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.c.Add(float64(n))
	return n, err
}

// prefetch pulls the NAR at loc into the blob cache ahead of a client
// (and so stores it).
func (p *puller) prefetch(loc upstreamNAR) { p.bc.PrefetchFill(p.fill(loc)) }

// filled is told how the pull of the NAR at loc ended: verified and
// pinned (it is stored), or not.
func (p *puller) filled(loc upstreamNAR, pin *serving.Pinned, err error) {
	path := loc.info.StorePath
	switch {
	case err == nil:
		p.fills.WithLabelValues(loc.up.Name, "ok").Inc()
		p.store(loc, pin)
		p.closures.substituted(loc)
	case errors.Is(err, serving.ErrAbandoned):
		// A request came before its turn; it joins a fill of its own.
	case errors.Is(err, serving.ErrNoRoom):
		p.fills.WithLabelValues(loc.up.Name, "skipped").Inc()
		p.s.log.Warn("no room in the blob cache for a NAR from upstream: served from upstream, not stored (see --blob-cache-size)",
			"upstream", loc.up.Name, "path", path, "size", loc.desc.Size)
	default:
		p.fills.WithLabelValues(loc.up.Name, "failed").Inc()
		p.s.log.Error("pulling a NAR from upstream failed; nothing stored", "upstream", loc.up.Name, "path", path, "url", loc.url, "err", err)
	}
}

// store stores the path of the pulled NAR pin holds in the first
// backend, in the background, within the bounds on stores, and releases
// pin.
func (p *puller) store(loc upstreamNAR, pin *serving.Pinned) {
	if p.pending.Add(1) > int64(p.opts.MaxPendingStores) {
		p.pending.Add(-1)
		pin.Release()
		p.stored.WithLabelValues("skipped").Inc()
		p.s.log.Warn("too many paths waiting to be stored; this one is not (it is pulled again when asked)", "path", loc.info.StorePath)
		return
	}
	if !p.background(func() {
		defer p.pending.Add(-1)
		defer pin.Release()
		select {
		case p.stores <- struct{}{}:
		case <-p.ctx.Done():
			return
		}
		defer func() { <-p.stores }()
		ctx, cancel := context.WithTimeout(p.ctx, fillTimeout(loc.desc.Size))
		defer cancel()
		outcome, err := p.storePath(ctx, loc, pin)
		p.stored.WithLabelValues(outcome).Inc()
		if err != nil && p.ctx.Err() == nil {
			p.s.log.Error("storing a path pulled from upstream failed; it is pulled again when asked", "upstream", loc.up.Name, "path", loc.info.StorePath, "backend", p.s.backends.List()[0].Name, "err", err)
		}
	}) {
		p.pending.Add(-1)
		pin.Release()
	}
}

// background runs f in a goroutine close waits for; it reports false,
// running nothing, once closing.
func (p *puller) background(f func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx.Err() != nil {
		return false
	}
	p.work.Add(1)
	go func() {
		defer p.work.Done()
		f()
	}()
	return true
}

// close ends the stores and closures under way (a path not stored yet
// is pulled again when asked) and waits for them.
func (p *puller) close() {
	p.mu.Lock()
	p.cancel()
	p.mu.Unlock()
	p.work.Wait()
}

// storePath stores the path of loc, whose verified NAR pin holds, in the
// first backend as `push --from-cache` does: NAR and narinfo blobs, then
// the manifest, then the tag. A path the backend holds meanwhile (another
// serve replica stored it, or a push) is left as it is.
func (p *puller) storePath(ctx context.Context, loc upstreamNAR, pin *serving.Pinned) (string, error) {
	b := p.s.backends.List()[0]
	hash := spec.PathTag(loc.info.StorePath)
	existing, err := artifact.FetchPathByHash(ctx, b.Target, hash)
	switch {
	case err == nil:
		p.markStored(hash, existing, "")
		return "present", nil
	case !isNotFound(err):
		return "failed", err
	}
	info := *loc.info
	art, err := artifact.StoreArtifact(ctx, b.Target, &info, func() (io.ReadCloser, error) { return pin.Open() })
	if err != nil {
		return "failed", err
	}
	p.markStored(hash, art, "upstream "+loc.up.Name)
	return "stored", nil
}

// markStored notes that the first backend holds the path art (stored now by
// the server from from, or found there if from is ""): its NAR and
// narinfo are served from there from now on.
func (p *puller) markStored(hash string, art artifact.PathArtifact, from string) {
	p.nars.Remove(art.NAR.Digest.String())
	p.s.backends.RememberBlob(0, art.NAR)
	if e, ok := p.s.narinfos.Get(hash); ok && e != nil {
		if _, up := e.NAR.(upstreamNAR); up && e.Artifact.Info.NarHash == art.Info.NarHash {
			moved := *e
			moved.Found = Found{Artifact: art, NAR: backendNAR{Backend: 0, Desc: art.NAR}}
			moved.source = p.s.backends.List()[0].Name
			p.s.narinfos.Put(hash, &moved, p.s.opts.CacheTTL)
		}
	}
	p.closures.stored(hash, art)
	if from != "" {
		p.s.storedPath(StoredPath{Path: art, From: from})
	}
}
