package conformance

import (
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/nixoci/nixoci/internal/latencyproxy"
	"github.com/nixoci/nixoci/internal/testenv"
)

// startLatencyProxy puts delay before every request to reg, as a
// registry in another region would; it returns the proxy's address.
func startLatencyProxy(t *testing.T, reg *testenv.Registry, delay time.Duration) string {
	t.Helper()
	return startLatencyProxyTo(t, reg.URL(), delay)
}

// startLatencyProxyTo puts delay before every request to the server at
// url; it returns the proxy's address.
func startLatencyProxyTo(t *testing.T, url string, delay time.Duration) string {
	t.Helper()
	p, err := latencyproxy.New(url, delay)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: p}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestServeRemoteRegistry: docker-registry 20 ms away (behind our latency
// proxy). The real Nix substitutes a closure pushed in format 2 and one
// pushed in format 1 through serve, with prefetching on: the first is
// learned whole from its root, through the catalog or, with the catalog
// off, through docker-registry's referrers tag schema; the second by
// following references.
func TestServeRemoteRegistry(t *testing.T) {
	fx := testenv.BuildFixture(t, "remote")
	old := testenv.BuildFixture(t, "remotev1")
	key := testenv.GenerateKey(t, "remote-1")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	remote := startLatencyProxy(t, reg, 20*time.Millisecond) + "/nix"
	run(t, "push", "--to", remote+":app", "--sign-key", key.SecretFile, fx.App)
	run(t, "push", "--to", remote+":old", "--closure-version", "1", "--sign-key", key.SecretFile, old.App)

	for _, tc := range []struct {
		name, source string
		closures     float64 // learned from their roots
		references   bool    // the format 1 closure found by following references
		flags        []string
	}{
		// The catalog lists both closures (the format 1 one without
		// path manifests: its paths are fetched by tag).
		{"catalog", "catalog", 2, false, nil},
		// Only format 2 closures are referrers of their roots.
		{"referrers", "referrers", 1, true, []string{"--catalog-interval", "0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServe(t, nil, append([]string{"--from", remote}, tc.flags...)...)
			waitServeCatalog(t, srv)
			for _, f := range []testenv.Fixture{fx, old} {
				store, stderr, err := realise(t, srv.URL, key.Public, f.App)
				if err != nil {
					t.Fatalf("nix-store --realise %s through serve from a registry 20 ms away: %v\n%s", f.App, err, stderr)
				}
				for _, p := range f.Closure {
					testenv.TreesEqual(t, p, filepath.Join(store, p))
				}
			}
			if n := metric(t, srv.URL, `nixoci_prefetch_closures_total{source="`+tc.source+`"}`); n != tc.closures {
				t.Errorf("closures learned through the %s: %v, want %v", tc.source, n, tc.closures)
			}
			// (Whether the references of the format 1 closure are counted
			// as prefetched depends on whether Nix asked for them first;
			// TestPrefetchClosureFromRoot in package substituter checks the
			// walk itself.)
			if n := metric(t, srv.URL, `nixoci_prefetched_narinfos_total{outcome="ok",via="references"}`); n > 0 && !tc.references {
				t.Errorf("%v narinfos prefetched by following references, where the catalog knew every closure", n)
			}
		})
	}
}
