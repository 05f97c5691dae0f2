package conformance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/internal/testenv"
)

// TestServeRedirectsBlobs: docker-registry with the redirect storage
// middleware sends blob GETs to nginx serving its storage directory, as
// registries on object storage do. With --redirect-blobs the real Nix
// substitutes a closure through serve fetching every NAR from nginx
// (its log shows them) while serve forwards no NAR bytes; a redirect to a
// corrupt blob still fails Nix's hash check.
func TestServeRedirectsBlobs(t *testing.T) {
	fx := testenv.BuildFixture(t, "redirect")
	key := testenv.GenerateKey(t, "redirect-1")
	storage := t.TempDir()
	static := testenv.StartNginxStatic(t, storage)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{StorageDir: storage, RedirectBaseURL: static.URL() + "/"})
	run(t, "push", "--to", reg.Ref("nix")+":app", "--sign-key", key.SecretFile, fx.App)

	srv := startServe(t, nil, "--from", reg.Ref("nix"), "--redirect-blobs")
	store, stderr, err := realise(t, srv.URL, key.Public, fx.App)
	if err != nil {
		t.Fatalf("nix-store --realise through serve --redirect-blobs: %v\n%s", err, stderr)
	}
	for _, p := range fx.Closure {
		testenv.TreesEqual(t, p, filepath.Join(store, p))
	}
	var fromNginx int
	for _, r := range static.Requests(t) {
		if r.Method == "GET" && strings.HasSuffix(r.URI, "/data") && r.Status == 200 {
			fromNginx++
		}
	}
	if fromNginx < len(fx.Closure) {
		t.Errorf("nginx served %d blobs, want the %d NARs of the closure", fromNginx, len(fx.Closure))
	}
	if got := metric(t, srv.URL, "nixoci_nar_redirects_total"); got < float64(len(fx.Closure)) {
		t.Errorf("serve redirected %v NAR requests, want %d", got, len(fx.Closure))
	}
	if got := metric(t, srv.URL, `nixoci_response_bytes_total{route="nar"}`); got > 4096 {
		t.Errorf("serve sent %v bytes of NAR responses, want only redirects", got)
	}

	// A corrupt NAR in the storage: the redirect still leads to it, and
	// Nix's own hash check refuses it.
	var nars []string
	filepath.Walk(filepath.Join(storage, "docker", "registry", "v2", "blobs"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Name() == "data" && fi.Size() > 1000 {
			nars = append(nars, p)
		}
		return nil
	})
	if len(nars) == 0 {
		t.Fatal("no NAR blobs in the registry's storage")
	}
	for _, p := range nars {
		data, _ := os.ReadFile(p)
		data[len(data)/2] ^= 0x55
		os.WriteFile(p, data, 0o644)
	}
	srv2 := startServe(t, nil, "--from", reg.Ref("nix"), "--redirect-blobs")
	if _, stderr, err := realise(t, srv2.URL, key.Public, fx.App); err == nil {
		t.Error("Nix accepted NARs from a corrupt storage through redirects")
	} else {
		t.Logf("Nix refused:\n%s", stderr)
	}
}
