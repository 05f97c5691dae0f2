// Package gc removes what no root needs from an image layout or registry
// repository holding nixoci artifacts, following closures as Nix's own
// garbage collector follows references (SPEC.md section 10).
//
// The roots are the repository's closure and image tags, less the
// closure tags a Retention drops; tags naming anything else (plain
// images, other tools' artifacts) are never touched, and what they reach
// is kept. Everything of nixoci's that no root reaches goes: store-path
// manifests, layer artifacts, closures' parts and cache-info manifests,
// push records beyond the newest of each kept closure, referrers indexes
// listing only those, tombstones. On a registry they go by manifest
// DELETEs (the registry's own garbage collection then frees the blobs);
// in an image layout their index entries go, then every blob no
// remaining entry reaches.
//
// A collection never waits for its grace period: it deletes what its
// mark and an earlier collection's mark at least the grace period before
// found unreachable, as the mark record (tag nixoci-gc-mark) that each
// collection leaves for the next says, and records what it finds newly
// unreachable (Result.Pending). It is safe while others push (SPEC.md
// section 10.3): it announces its deletions with the nixoci-gc marker
// tag and deletes in batches of at most spec.GCBatch, each after a fresh
// look at the roots; pushes (package artifact) check for the marker and
// store again what a collection deleted under them.
//
// Memory is bounded by the repository's size: per path tag a few dozen
// bytes, per closure its members' hash parts and digests.
//
// One file per concern:
//
//	options.go    Options, Retention, Result, Item, Progress, errors
//	look.go       one look at the tags; reading what named tags name
//	reach.go      what roots reach
//	retention.go  push times; which closure tags retention drops
//	mark.go       marking: the garbage one look finds
//	registry.go   deleting from a registry, in batches
//	layout.go     deleting from an image layout: index entries, then blobs
//	collect.go    Collect: mark, what is due, marker, batches
//	record.go     the mark record: what was unreachable, since when
//	remove.go     Remove: the tags `nixoci rm` removes
package gc
