package gc

import (
	"github.com/opencontainers/go-digest"

	"github.com/nixoci/nixoci/spec"
)

var pathHash = spec.PathTag

// reach is what the roots reach: store paths (by hash part, so that a
// path's tag is kept whichever of its manifests a closure lists),
// manifests and blobs by digest, and layer artifacts by tag.
type reach struct {
	hashes  map[string]bool
	digests map[digest.Digest]bool
	layers  map[string]bool
}

func newReach() *reach {
	return &reach{hashes: map[string]bool{}, digests: map[digest.Digest]bool{}, layers: map[string]bool{}}
}

// add records what n reaches.
func (rc *reach) add(n *node) {
	rc.digests[n.desc.Digest] = true
	for _, o := range n.own {
		rc.digests[o.desc.Digest] = true
	}
	for _, h := range n.hashes {
		rc.hashes[h] = true
	}
	for _, d := range n.digests {
		rc.digests[d] = true
	}
	for _, b := range n.blobs {
		rc.digests[b.Digest] = true
	}
	for _, l := range n.layers {
		rc.layers[l] = true
	}
}

// reaches reports whether it is still needed: its manifest (or a store
// path or layer tag it holds) is reached.
func (rc *reach) reaches(it Item) bool {
	if it.Kind == KindClosureTag {
		return false // what it names is reached; the tag is checked by name
	}
	if rc.digests[it.Digest] {
		return true
	}
	switch it.Kind {
	case KindPath:
		return it.StorePath != "" && rc.hashes[pathHash(it.StorePath)]
	case KindLayer:
		for _, t := range it.Tags {
			if rc.layers[t] {
				return true
			}
		}
	case KindReferrers:
		return it.subject != nil && rc.digests[it.subject.Digest]
	case KindFile:
		// A realisation or listing stays with its path.
		return it.keptWith != "" && rc.hashes[it.keptWith]
	case KindRecord:
		// A record of a closure found unreachable at the mark is kept if
		// the closure is reached again; older records of a closure that
		// was reached stay garbage (subjectReached says which).
		return it.subject != nil && rc.digests[it.subject.Digest] && it.orphan()
	}
	return false
}
