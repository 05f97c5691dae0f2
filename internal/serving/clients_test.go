package serving

import (
	"net/http/httptest"
	"net/netip"
	"testing"
)

// TestClients: clients are told apart by address (IPv6 by /64), and
// X-Forwarded-For is believed only from a trusted proxy, right to left.
func TestClients(t *testing.T) {
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::1/128")}
	for _, tc := range []struct {
		name, remote string
		xff          []string
		trusted      bool
		want         string
	}{
		{"v4", "192.0.2.7:40000", nil, false, "192.0.2.7"},
		{"v4, another port", "192.0.2.7:40001", nil, false, "192.0.2.7"},
		{"v4-mapped", "[::ffff:192.0.2.7]:40000", nil, false, "192.0.2.7"},
		{"v6 by /64", "[2001:db8:1:2:aaaa::1]:40000", nil, false, "2001:db8:1:2::/64"},
		{"xff ignored without trust", "192.0.2.7:1", []string{"203.0.113.9"}, false, "192.0.2.7"},
		{"xff ignored from an untrusted peer", "192.0.2.7:1", []string{"203.0.113.9"}, true, "192.0.2.7"},
		{"xff from a trusted proxy", "10.1.2.3:1", []string{"203.0.113.9"}, true, "203.0.113.9"},
		{"spoofed entries left of the proxy's", "10.1.2.3:1", []string{"1.1.1.1, 203.0.113.9"}, true, "203.0.113.9"},
		{"chain of trusted proxies", "10.1.2.3:1", []string{"203.0.113.9, 10.9.9.9", "10.8.8.8"}, true, "203.0.113.9"},
		{"v6 proxy", "[fd00::1]:1", []string{"2001:db8::5"}, true, "2001:db8::/64"},
		{"malformed entry: the proxy", "10.1.2.3:1", []string{"junk"}, true, "10.1.2.3"},
		{"only proxies: the last", "10.1.2.3:1", []string{"10.4.4.4"}, true, "10.1.2.3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c *Clients
			if tc.trusted {
				c = NewClients(proxies)
			}
			r := httptest.NewRequest("GET", "/x", nil)
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := c.Of(r); got != tc.want {
				t.Errorf("Of = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseTrustedProxy(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.5":      "10.0.0.5/32",
		"10.1.2.3/8":    "10.0.0.0/8",
		"fd00::1":       "fd00::1/128",
		"2001:db8::/32": "2001:db8::/32",
	} {
		if p, err := ParseTrustedProxy(in); err != nil || p.String() != want {
			t.Errorf("ParseTrustedProxy(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	for _, bad := range []string{"", "host.example", "10.0.0.0/33"} {
		if _, err := ParseTrustedProxy(bad); err == nil {
			t.Errorf("ParseTrustedProxy(%q) accepted", bad)
		}
	}
}
