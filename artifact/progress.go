package artifact

import (
	"sync/atomic"
)

// Progress counts the work of a push or pull as it happens, for a caller
// to display; all fields may be read concurrently.
type Progress struct {
	PathsTotal  atomic.Int64 // store paths in the closure
	PathsDone   atomic.Int64 // paths finished (packed or reused)
	PathsReused atomic.Int64 // paths whose artifact already existed
	NarBytes    atomic.Int64 // uncompressed NAR bytes of finished paths
	Transferred atomic.Int64 // blob bytes uploaded or downloaded, again when retried
}

func (p *Progress) pathDone(narSize uint64, reused bool) {
	if p == nil {
		return
	}
	p.PathsDone.Add(1)
	p.NarBytes.Add(int64(narSize))
	if reused {
		p.PathsReused.Add(1)
	}
}

func (p *Progress) transferCounter() *atomic.Int64 {
	if p == nil {
		return nil
	}
	return &p.Transferred
}
