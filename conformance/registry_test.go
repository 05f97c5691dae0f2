package conformance

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/internal/testenv"
)

// composedLayers returns a manifest's layer digests.
func composedLayers(t *testing.T, manifest string) []string {
	t.Helper()
	var m struct {
		Layers []struct {
			Digest string `json:"digest"`
		} `json:"layers"`
	}
	if err := json.Unmarshal([]byte(manifest), &m); err != nil {
		t.Fatalf("manifest: %v\n%s", err, manifest)
	}
	var out []string
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out
}

// convertedTotal reads nixoci_layers_converted_total from /metrics.
func convertedTotal(t *testing.T, url string) int {
	t.Helper()
	_, body := httpGet(t, url+"/metrics")
	m := regexp.MustCompile(`(?m)^nixoci_layers_converted_total (\d+)`).FindStringSubmatch(body)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestRegistryComposesImages: `nixoci serve --registry` is a read-only
// registry whose images are composed from stored closures; real clients
// (skopeo, oras, crane) pull them, umoci + runc run them, names sharing
// closures share layers, and bad names get distribution errors.
func TestRegistryComposesImages(t *testing.T) {
	fx := testenv.BuildFixture(t, "compose")
	extra := testenv.BuildDerivation(t, "fx-extra-compose", `mkdir -p $out/share; echo extra > $out/share/extra; ln -s $ref0/bin/busybox $out/share/bb`, fx.Busybox)
	layoutDir := filepath.Join(t.TempDir(), "l")
	layout := "oci:" + layoutDir
	run(t, "push", "--to", layout+":app", fx.App)
	run(t, "push", "--to", layout+":extra", extra)
	names := filepath.Join(t.TempDir(), "names.json")
	os.WriteFile(names, []byte(`{"hello": {"closures": ["app"], "entrypoint": ["/bin/app"]}}`), 0o644)
	srv := startServe(t, nil, "--from", layout, "--registry", "--names", names)
	host := strings.TrimPrefix(srv.URL, "http://")

	// skopeo pulls the image; umoci and runc run it.
	fetched := filepath.Join(t.TempDir(), "fetched")
	testenv.Run(t, "skopeo", "copy", "--src-tls-verify=false", "docker://"+host+"/hello:latest", "oci:"+fetched+":t")
	if got := runImage(t, fetched, "t"); got+"\n" != fx.Message {
		t.Errorf("composed image printed %q, want %q", got, fx.Message)
	}

	// oras and crane see the same manifest; their copies verify digests.
	resp, err := http.Get(srv.URL + "/v2/hello/manifests/latest")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	digest := resp.Header.Get("Docker-Content-Digest")
	orasManifest := oras(t, "manifest", "fetch", "--plain-http", host+"/hello:latest")
	craneManifest := testenv.Run(t, "crane", "manifest", "--insecure", host+"/hello:latest")
	if orasManifest != craneManifest {
		t.Errorf("oras and crane fetched different manifests")
	}
	if d := testenv.Run(t, "crane", "digest", "--insecure", host+"/hello:latest"); d != digest {
		t.Errorf("crane digest %s, Docker-Content-Digest %s", d, digest)
	}
	oras(t, "copy", "--from-plain-http", host+"/hello:latest", "--to-oci-layout", filepath.Join(t.TempDir(), "orascopy")+":t")
	testenv.Run(t, "crane", "pull", "--insecure", "--format", "oci", host+"/hello:latest", filepath.Join(t.TempDir(), "cranepull"))

	// A second name over the same closures plus one more shares every
	// layer of the first, and converts only the new path.
	before := convertedTotal(t, srv.URL)
	union := oras(t, "manifest", "fetch", "--plain-http", host+"/hello/extra:latest")
	after := convertedTotal(t, srv.URL)
	first, second := composedLayers(t, orasManifest), composedLayers(t, union)
	for _, l := range first[:len(first)-1] { // all but the root layer
		if !contains(second, l) {
			t.Errorf("layer %s of hello is not shared by hello/extra", l)
		}
	}
	if after-before != 1 {
		t.Errorf("composing hello/extra converted %d layers, want 1 (the extra path)", after-before)
	}
	// Asking again answers from what is composed.
	again := oras(t, "manifest", "fetch", "--plain-http", host+"/hello/extra:latest")
	if again != union || convertedTotal(t, srv.URL) != after {
		t.Error("a second request for the same name composed again")
	}

	// Bad names: distribution errors, not 500s.
	for _, tc := range []struct {
		path, code string
		status     int
	}{
		{"/v2/no-such-closure/manifests/latest", "NAME_UNKNOWN", 404},
		{"/v2/UPPER/manifests/latest", "NAME_INVALID", 400},
		{"/v2/a//b/manifests/latest", "NAME_INVALID", 400},
		{"/v2/a/../b/manifests/latest", "NAME_INVALID", 400},
		{"/v2/a/%2e%2e/b/manifests/latest", "NAME_INVALID", 400},
		{"/v2/" + strings.Repeat("x/", 20) + "x/manifests/latest", "NAME_INVALID", 400},
		{"/v2/" + strings.Repeat("y", 300) + "/manifests/latest", "NAME_INVALID", 400},
		{"/v2/hello/manifests/sha256:" + strings.Repeat("0", 64), "MANIFEST_UNKNOWN", 404},
		{"/v2/hello/blobs/sha256:" + strings.Repeat("0", 64), "BLOB_UNKNOWN", 404},
		{"/v2/hello/blobs/notadigest", "DIGEST_INVALID", 400},
	} {
		code, body := httpGet(t, srv.URL+tc.path)
		if code != tc.status || !strings.Contains(body, tc.code) {
			t.Errorf("GET %s = %d %s, want %d %s", tc.path, code, body, tc.status, tc.code)
		}
	}
	req, _ := http.NewRequest("PUT", srv.URL+"/v2/hello/manifests/latest", strings.NewReader("{}"))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PUT manifest: %v %v, want 405", resp.StatusCode, err)
	}
}

// TestRegistryComposesFromSeveralBackends: with several --from, a name is
// composed in the first backend holding all its closures; a name whose
// closures are spread over backends is NAME_UNKNOWN, saying why.
func TestRegistryComposesFromSeveralBackends(t *testing.T) {
	fx := testenv.BuildFixture(t, "compose")
	extra := testenv.BuildDerivation(t, "fx-extra-several", `mkdir -p $out/share; echo several > $out/share/several`)
	first := "oci:" + filepath.Join(t.TempDir(), "first")
	second := "oci:" + filepath.Join(t.TempDir(), "second")
	run(t, "push", "--to", first+":solo", extra)
	run(t, "push", "--to", second+":app", fx.App)
	names := filepath.Join(t.TempDir(), "names.json")
	os.WriteFile(names, []byte(`{"hello": {"closures": ["app"], "entrypoint": ["/bin/app"]}}`), 0o644)
	srv := startServe(t, nil, "--from", first, "--from", second, "--registry", "--names", names)
	host := strings.TrimPrefix(srv.URL, "http://")

	for _, name := range []string{"app", "solo"} {
		// oras copy verifies every blob against its digest.
		oras(t, "copy", "--from-plain-http", host+"/"+name+":latest", "--to-oci-layout", filepath.Join(t.TempDir(), name)+":t")
	}
	fetched := filepath.Join(t.TempDir(), "fetched")
	testenv.Run(t, "skopeo", "copy", "--src-tls-verify=false", "docker://"+host+"/hello:latest", "oci:"+fetched+":t")
	if got := runImage(t, fetched, "t"); got+"\n" != fx.Message {
		t.Errorf("image composed from the second backend printed %q, want %q", got, fx.Message)
	}
	code, body := httpGet(t, srv.URL+"/v2/app/solo/manifests/latest")
	if code != http.StatusNotFound || !strings.Contains(body, "NAME_UNKNOWN") || !strings.Contains(body, "no backend holds all") {
		t.Errorf("closures in different backends: %d %s, want 404 NAME_UNKNOWN naming the reason", code, body)
	}
}
