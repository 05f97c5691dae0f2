package spec

import "time"

// Push records and garbage collection (SPEC.md section 10).
const (
	// ArtifactTypePushRecord marks a push record: an image manifest with no
	// layers whose subject is a pushed closure, found as one of its
	// referrers. It tells retention when the closure was pushed without
	// putting time into any digest.
	ArtifactTypePushRecord = "application/vnd.nixoci.push.v1"
	// ArtifactTypeGCMarker marks the manifest the GCMarkerTag names while a
	// collector deletes and after it finished, and the tombstones a
	// collector pushes to remove one tag on registries that delete only by
	// digest.
	ArtifactTypeGCMarker = "application/vnd.nixoci.gc.v1"

	// AnnotationPushed is a push record's time: RFC 3339 in UTC with
	// fractional seconds (time.RFC3339Nano), so that pushes within one
	// second keep their order.
	AnnotationPushed = AnnotationPrefix + "pushed"
	// AnnotationTag is the closure tag a push record was pushed as, or the
	// tag a tombstone removes.
	AnnotationTag = AnnotationPrefix + "tag"
	// AnnotationTool names the writer of a push record, e.g. "nixoci/1.2.0".
	AnnotationTool = AnnotationPrefix + "tool"
	// AnnotationHost is the pushing host's name; only if the user asks.
	AnnotationHost = AnnotationPrefix + "host"
	// AnnotationGCStarted and AnnotationGCFinished are the times (as
	// AnnotationPushed) a collector started deleting and finished; a
	// running collector's marker has no AnnotationGCFinished.
	AnnotationGCStarted  = AnnotationPrefix + "gc-started"
	AnnotationGCFinished = AnnotationPrefix + "gc-finished"
	// AnnotationGCMarked is the time of the mark a mark record holds (as
	// AnnotationPushed).
	AnnotationGCMarked = AnnotationPrefix + "gc-marked"
	// MediaTypeGCMark is the one layer of a mark record: JSON listing
	// what collections found unreachable, and since when (SPEC.md 10.3).
	MediaTypeGCMark = "application/vnd.nixoci.gc.mark.v1+json"
	// GCMarkMaxSize bounds the mark record a collector reads: about
	// 1.5 million entries.
	GCMarkMaxSize = 256 << 20
	// AnnotationTombstone is "true" on a tombstone.
	AnnotationTombstone = AnnotationPrefix + "tombstone"

	// GCMarkerTag is the tag of the collector's marker (SPEC.md 10.3).
	GCMarkerTag = "nixoci-gc"
	// GCMarkTag is the tag of the collector's mark record: what the last
	// collections found unreachable, and since when (SPEC.md 10.3).
	GCMarkTag = "nixoci-gc-mark"
	// GCBatch is B, the longest a collector deletes after one look at the
	// repository's roots; a push that finds a running collector's marker
	// after tagging waits this long before checking what it tagged.
	GCBatch = 10 * time.Second
	// GCMarkerMaxAge is the age after which a running collector's marker
	// is taken for one left by a collector that died.
	GCMarkerMaxAge = 24 * time.Hour
	// GCClockMargin is how far clocks of pushers and collectors may
	// disagree: a push checks its closure if a collector finished no
	// earlier than this before the push started.
	GCClockMargin = time.Minute
)

// FormatTime formats t as push records and gc markers hold times.
func FormatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// ParseTime reads a time written by FormatTime (or any RFC 3339 time).
func ParseTime(s string) (time.Time, error) { return time.Parse(time.RFC3339Nano, s) }
