package substituter

import (
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/nixoci/nixoci/internal/serving"
)

// Nix asks for a NAR right after the narinfo of a path it substitutes, but
// it also asks for narinfos it never follows with a NAR (`nix path-info`,
// paths another substituter supplies, paths it has). So a client's
// narinfos start NARs downloading into the blob cache only once the
// client has shown it substitutes, by asking for a NAR: that first NAR
// request starts the NARs of the narinfos the client asked for before
// (the most recent first: Nix fetches references before the paths
// naming them, the reverse of the order it asks for narinfos), and for
// the next activeFor, each narinfo the client asks for starts its NAR at
// once.
const (
	activeFor      = 30 * time.Second
	pendingPerPeer = 4096 // narinfos remembered per client until it asks for a NAR
	peers          = 256  // clients remembered
)

// narAhead decides when to fetch NARs ahead of a client. Clients are
// told apart by address (see serving.Clients), not by connection: Nix
// spreads its requests over many.
type narAhead struct {
	prefetch func(NARLocation) // starts fetching a NAR into the blob cache
	clients  *serving.Clients
	peers    *serving.LRU[*peerNARs] // client -> its narinfos and last NAR request
}

type peerNARs struct {
	mu      sync.Mutex
	pending []NARLocation
	active  time.Time
}

func newNARAhead(prefetch func(NARLocation), clients *serving.Clients) *narAhead {
	return &narAhead{prefetch: prefetch, clients: clients, peers: serving.NewLRU[*peerNARs](peers)}
}

func (a *narAhead) peer(r *http.Request) *peerNARs {
	return a.peers.GetOrAdd(a.clients.Of(r), time.Hour, func() *peerNARs { return &peerNARs{} })
}

// narinfo notes that the client asked for the narinfo of the NAR at loc.
func (a *narAhead) narinfo(r *http.Request, loc NARLocation) {
	p := a.peer(r)
	p.mu.Lock()
	if time.Since(p.active) < activeFor {
		p.mu.Unlock()
		a.prefetch(loc)
		return
	}
	if len(p.pending) >= pendingPerPeer {
		p.pending = slices.Delete(p.pending, 0, len(p.pending)/2)
	}
	p.pending = append(p.pending, loc)
	p.mu.Unlock()
}

// nar notes that the client asked for a NAR: it substitutes, so the NARs
// of its earlier narinfos are fetched, the most recent first.
func (a *narAhead) nar(r *http.Request) {
	p := a.peer(r)
	p.mu.Lock()
	p.active = time.Now()
	pending := p.pending
	p.pending = nil
	p.mu.Unlock()
	for i := len(pending) - 1; i >= 0; i-- {
		a.prefetch(pending[i])
	}
}
