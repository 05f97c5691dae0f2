package serving

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Clients tell the clients of a server apart, for what is counted per
// client (password checks, NARs fetched ahead): by the IP address a
// request comes from, an IPv6 address by its /64, the block one host
// usually holds (else a client would be as many clients as it has
// addresses).
//
// Behind a reverse proxy every request comes from the proxy. A request
// from one of TrustedProxies is the client's that the X-Forwarded-For
// header names: its rightmost address that is not itself a trusted
// proxy (each proxy appends the address it was reached from, so what is
// left of it is whatever the client sent). X-Forwarded-For is never read
// from any other peer. The zero Clients trusts no proxy.
type Clients struct {
	trusted []netip.Prefix
}

// NewClients makes Clients that believe X-Forwarded-For from the proxies
// in trusted only.
func NewClients(trusted []netip.Prefix) *Clients {
	return &Clients{trusted: trusted}
}

// Of names the client of r, e.g. "192.0.2.7" or "2001:db8:1:2::/64".
func (c *Clients) Of(r *http.Request) string {
	if c == nil || len(c.trusted) == 0 {
		// The common case, on every narinfo request: an IPv4 peer is
		// its own key, no parsing needed.
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil && strings.IndexByte(host, ':') < 0 {
			return host
		}
	}
	peer, ok := addrOf(r.RemoteAddr)
	if !ok {
		return r.RemoteAddr
	}
	if c != nil && c.isTrusted(peer) {
		peer = c.forwardedFor(r, peer)
	}
	return clientKey(peer)
}

// forwardedFor returns the rightmost address of r's X-Forwarded-For
// headers that is not a trusted proxy, or peer if there is none or it
// is malformed.
func (c *Clients) forwardedFor(r *http.Request, peer netip.Addr) netip.Addr {
	values := r.Header.Values("X-Forwarded-For")
	for i := len(values) - 1; i >= 0; i-- {
		hops := strings.Split(values[i], ",")
		for j := len(hops) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[j]))
			if err != nil {
				return peer
			}
			a = a.Unmap()
			if !c.isTrusted(a) {
				return a
			}
		}
	}
	return peer
}

func (c *Clients) isTrusted(a netip.Addr) bool {
	for _, p := range c.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// addrOf parses the address of "host:port" (a RemoteAddr), IPv4-mapped
// IPv6 addresses as IPv4.
func addrOf(hostPort string) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		host = hostPort
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

// clientKey is a's own string for IPv4, its /64 for IPv6.
func clientKey(a netip.Addr) string {
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// ParseTrustedProxy parses an address or CIDR block of proxies to trust,
// e.g. "10.0.0.5" or "10.0.0.0/8".
func ParseTrustedProxy(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}
