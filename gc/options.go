package gc

import (
	"errors"
	"slices"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Sentinel errors; failures wrap them with what was being handled.
var (
	// ErrCollectorRunning: another collection's marker, younger than
	// spec.GCMarkerMaxAge, says it is running (or died; then Force).
	ErrCollectorRunning = errors.New("another nixoci gc is running")
	// ErrNotOurs: a tag to remove names something other than a nixoci
	// closure or image.
	ErrNotOurs = errors.New("not a nixoci closure or image tag")
	// ErrKeepsNothing: a Retention keeps none of the tags it selects
	// without saying so (KeepNone).
	ErrKeepsNothing = errors.New("retention keeps none of the closure tags it selects")
)

// DefaultGrace is the default grace period: how long something must
// have been unreachable, seen so by two collections' marks, before a
// collection deletes it.
const DefaultGrace = time.Hour

// Options configure Collect. The zero value collects with no retention,
// a grace period of DefaultGrace and 8 requests at a time.
type Options struct {
	// DryRun finds what would go and changes nothing: one mark, no
	// marker, no mark record written.
	DryRun bool
	// Retention, if set, drops closure tags; nil keeps every root.
	Retention *Retention
	// Grace is how long something must have been unreachable, at this
	// collection's mark and at an earlier one's at least Grace before
	// (the mark record, SPEC.md 10.3), before it is deleted; and the age
	// a blob of an image layout must have. Newer garbage is left for a
	// later collection (Result.Pending). 0 means DefaultGrace, a negative
	// value no grace period at all.
	Grace time.Duration
	// Wait, when garbage is pending, waits until it is Grace old and
	// collects again: the one-shot collection of nixoci before mark
	// records, which takes up to Grace.
	Wait bool
	// Jobs bounds concurrent requests; default 8.
	Jobs int
	// Force starts although another collection's marker says it runs.
	Force bool
	// Progress, if set, is updated as work is done.
	Progress *Progress
}

func (o Options) withDefaults() Options {
	switch {
	case o.Grace == 0:
		o.Grace = DefaultGrace
	case o.Grace < 0:
		o.Grace = 0
	}
	if o.Jobs <= 0 {
		o.Jobs = 8
	}
	return o
}

// Retention chooses which closure tags stay roots. A closure tag
// matching Match (any of its path.Match patterns; every closure tag if
// Match is empty) is kept if it is among the KeepLast newest of the
// matching tags, or was pushed within KeepWithin (if > 0); otherwise it
// is dropped. Push times come from push records (SPEC.md 10.1); a
// closure without one counts as the oldest. Tags matching no pattern,
// and image tags, are always kept.
//
// A Retention that would keep none of the tags it selects (KeepLast and
// KeepWithin both 0) must say so with KeepNone: a zero count is never
// taken to mean "delete them all" by accident (ErrKeepsNothing).
type Retention struct {
	Match      []string
	KeepLast   int
	KeepWithin time.Duration
	KeepNone   bool
}

// Item kinds.
const (
	KindClosureTag = "closure-tag" // a tag retention dropped; what it names stays (another root keeps it)
	KindClosure    = "closure"     // a closure's top manifest or index
	KindPart       = "closure-part"
	KindCacheInfo  = "cache-info"
	KindRecord     = "push-record"
	KindPath       = "path"
	KindLayer      = "layer"
	KindReferrers  = "referrers" // a referrers index (tag sha256-…) listing only garbage
	KindTombstone  = "tombstone"
	KindMarker     = "marker" // an old gc marker
	KindOther      = "other"  // another manifest of nixoci's no root reaches
	KindFile       = "file"   // a build log, realisation, NAR listing or debug-info entry (SPEC.md 12.5)
)

// Item is one thing a collection removes.
type Item struct {
	Kind   string        `json:"kind"`
	Digest digest.Digest `json:"digest"`
	// Tags are the item's tags (removed with it).
	Tags      []string `json:"tags,omitempty"`
	StorePath string   `json:"storePath,omitempty"`
	// Size is the bytes of the manifest and of the blobs it names.
	Size int64 `json:"size"`
	// Since is when a collection's mark first found it unreachable (and
	// every mark since did); DeletableAt, for pending garbage, when a
	// collection may delete it if it is still unreachable then.
	Since       time.Time `json:"since,omitzero"`
	DeletableAt time.Time `json:"deletableAt,omitzero"`

	mediaType string
	subject   *ocispec.Descriptor
	// orphanRecord: a push record whose closure was unreachable when
	// marked (not merely older than the closure's newest record).
	orphanRecord bool
	manifestSize int64
	blobs        []ocispec.Descriptor // blobs the manifest names
	needsBlobs   bool                 // blobs not known yet: read the manifest
	keptWith     string               // KindFile: the hash part of the path it stays with, if any
}

func (it Item) orphan() bool { return it.orphanRecord }

// key identifies an item across marks.
func (it Item) key() string { return itemKey(it.Kind, it.Digest, it.Tags) }

// itemKey identifies an item of a kind and digest; a closure tag that
// alone goes (another root names its closure) is one item per tag.
func itemKey(kind string, d digest.Digest, tags []string) string {
	if kind == KindClosureTag && len(tags) > 0 {
		return kind + " " + d.String() + " " + tags[0]
	}
	return kind + " " + d.String()
}

func (it Item) descriptor() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: it.mediaType, Digest: it.Digest, Size: it.manifestSize}
}

// TagTime is a closure tag retention applied to, with its push time
// (zero if unknown).
type TagTime struct {
	Tag    string        `json:"tag"`
	Digest digest.Digest `json:"digest"`
	Pushed time.Time     `json:"pushed,omitzero"`
}

// Result is what a collection did (or, with DryRun, would do).
type Result struct {
	Target string `json:"target"`
	DryRun bool   `json:"dryRun"`
	// Roots kept: closure tags, image tags, and other tags whose content
	// is kept.
	Closures int `json:"closures"`
	Images   int `json:"images"`
	Others   int `json:"others"`
	// Kept and Dropped are the closure tags retention applied to.
	Kept    []TagTime `json:"kept,omitempty"`
	Dropped []TagTime `json:"dropped,omitempty"`
	// Marked is when this collection's mark ended: the Since of what it
	// found unreachable first.
	Marked time.Time `json:"marked"`
	// Grace is the grace period it applied.
	Grace time.Duration `json:"grace"`
	// Removed lists what went (would go), in the order it went.
	Removed []Item `json:"removed"`
	// Pending lists the garbage found but not yet unreachable for the
	// grace period, with when each becomes deletable; it is recorded
	// (tag nixoci-gc-mark) for the next collection. NextDeletable is the
	// earliest of those times (zero if none pending): run again then.
	Pending       []Item    `json:"pending"`
	NextDeletable time.Time `json:"nextDeletable,omitzero"`
	// Spared counts what the first mark found unreachable and a later
	// look found in use again (a concurrent push).
	Spared int `json:"spared"`
	// Paths is the number of store-path manifests removed.
	Paths int `json:"paths"`
	// Bytes: in an image layout, the size of the blob files deleted
	// (BlobFiles of them); in a registry, the size of the manifests
	// removed and of the blobs only they named, which the registry's own
	// garbage collection frees.
	Bytes     int64 `json:"bytes"`
	BlobFiles int   `json:"blobFiles,omitempty"`
	// DeletesRefused is set by a dry run on a registry that refuses
	// deletes: a real run would fail before deleting anything.
	DeletesRefused string        `json:"deletesRefused,omitempty"`
	Took           time.Duration `json:"took"`
}

// StorePaths lists the store paths of the path manifests removed, sorted.
func (r *Result) StorePaths() []string {
	var out []string
	for _, it := range r.Removed {
		if it.Kind == KindPath {
			out = append(out, it.StorePath)
		}
	}
	slices.Sort(out)
	return out
}

// Progress counts a collection's work for a caller to display; every
// field may be read concurrently.
type Progress struct {
	phase   atomic.Pointer[string]
	Tags    atomic.Int64 // tags listed by the last look
	Roots   atomic.Int64 // roots to read in the current mark
	Read    atomic.Int64 // of those, read
	Garbage atomic.Int64 // items found by the last mark
	Removed atomic.Int64 // items removed so far
	Blobs   atomic.Int64 // blob files deleted so far (image layouts)
	Waiting atomic.Int64 // seconds of grace period left (Options.Wait)
}

// Phase is what the collection does now: "marking", "waiting",
// "deleting", "sweeping", "done".
func (p *Progress) Phase() string {
	if s := p.phase.Load(); s != nil {
		return *s
	}
	return ""
}

func (p *Progress) setPhase(s string) {
	if p != nil {
		p.phase.Store(&s)
	}
}
