package substituter

import (
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/internal/serving"
)

// recordingAhead is a narAhead whose prefetches are recorded.
func recordingAhead(clients *serving.Clients) (*narAhead, func() map[digest.Digest]bool) {
	var mu sync.Mutex
	got := map[digest.Digest]bool{}
	a := &narAhead{clients: clients, peers: serving.NewLRU[*peerNARs](peers)}
	a.prefetch = func(loc NARLocation) {
		mu.Lock()
		defer mu.Unlock()
		got[loc.Blob().Digest] = true
	}
	return a, func() map[digest.Digest]bool {
		mu.Lock()
		defer mu.Unlock()
		return got
	}
}

func loc(i int) NARLocation {
	return backendNAR{Desc: ocispec.Descriptor{Digest: digest.FromString(strconv.Itoa(i))}}
}

// TestNARAheadConcurrentFirstRequests: a client's first narinfo
// requests, arriving at once on its many connections, are all
// remembered: none is lost to another connection's first request
// making the client's record at the same time.
func TestNARAheadConcurrentFirstRequests(t *testing.T) {
	for round := range 200 {
		a, prefetched := recordingAhead(nil)
		const n = 16
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				r := httptest.NewRequest("GET", "/x.narinfo", nil)
				r.RemoteAddr = "192.0.2.1:" + strconv.Itoa(40000+i) // one client, many connections
				a.narinfo(r, loc(i))
			})
		}
		wg.Wait()
		r := httptest.NewRequest("GET", "/nar/x.nar", nil)
		r.RemoteAddr = "192.0.2.1:50000"
		a.nar(r)
		if got := len(prefetched()); got != n {
			t.Fatalf("round %d: %d of the client's %d narinfos were fetched ahead once it substituted", round, got, n)
		}
	}
}

// TestNARAheadBehindProxy: behind a trusted proxy, each client the proxy
// names is a peer of its own, so one client's NAR request does not fetch
// what another only asked the narinfo of; without trusting the proxy,
// X-Forwarded-For is ignored.
func TestNARAheadBehindProxy(t *testing.T) {
	for _, tc := range []struct {
		name    string
		clients *serving.Clients
		want    int // NARs fetched ahead when client B substitutes
	}{
		{"trusted proxy", serving.NewClients([]netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}), 0},
		{"untrusted proxy: one peer", nil, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, prefetched := recordingAhead(tc.clients)
			r := httptest.NewRequest("GET", "/x.narinfo", nil)
			r.RemoteAddr, r.Header["X-Forwarded-For"] = "10.0.0.1:1000", []string{"203.0.113.1"}
			a.narinfo(r, loc(1))
			r = httptest.NewRequest("GET", "/nar/y.nar", nil)
			r.RemoteAddr, r.Header["X-Forwarded-For"] = "10.0.0.1:1001", []string{"203.0.113.2"}
			a.nar(r)
			if got := len(prefetched()); got != tc.want {
				t.Errorf("%d NARs fetched ahead for client A when client B substituted, want %d", got, tc.want)
			}
		})
	}
}
