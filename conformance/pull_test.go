package conformance

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// upstreamCache is a real upstream binary cache: the directory `nix copy
// --to file://` wrote for roots, signed by a key that plays
// cache.nixos.org's, served by nginx.
type upstreamCache struct {
	Dir   string
	Key   testenv.KeyPair
	Nginx *testenv.NginxStatic
}

func newUpstreamCache(t *testing.T, roots ...string) *upstreamCache {
	t.Helper()
	u := &upstreamCache{Dir: t.TempDir(), Key: testenv.GenerateKey(t, "cache.nixos.org-1")}
	testenv.Run(t, "nix", append([]string{"copy", "--to", "file://" + u.Dir + "?secret-key=" + u.Key.SecretFile}, roots...)...)
	u.Nginx = testenv.StartNginxStatic(t, u.Dir)
	return u
}

// narGets counts nginx's 200 answers to GET of each NAR file.
func (u *upstreamCache) narGets(t *testing.T) map[string]int {
	t.Helper()
	got := map[string]int{}
	for _, r := range u.Nginx.Requests(t) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URI, "/nar/") && r.Status == http.StatusOK {
			got[strings.TrimPrefix(r.URI, "/")]++
		}
	}
	return got
}

// narFiles lists the NAR files of the cache, as "nar/<name>".
func (u *upstreamCache) narFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(u.Dir, "nar", "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no NAR files in %s: %v", u.Dir, err)
	}
	for i, f := range files {
		files[i] = "nar/" + filepath.Base(f)
	}
	return files
}

// realiseAlone is realise with a narinfo disk cache of the client's own
// (Nix clients running at once share ~/.cache/nix and fail on its
// SQLite constraints) and options added.
func realiseAlone(t *testing.T, url, publicKey, root string, options ...string) (string, string, error) {
	t.Helper()
	store := testenv.NewStoreDir(t)
	args := []string{"--store", store, "--realise", root,
		"--option", "substituters", url, "--option", "trusted-public-keys", publicKey,
		"--option", "narinfo-cache-negative-ttl", "0", "--option", "narinfo-cache-positive-ttl", "0"}
	for i := 0; i+1 < len(options); i += 2 {
		args = append(args, "--option", options[i], options[i+1])
	}
	cmd := testenv.Cmd(t, "nix-store", args...)
	cmd.Env = append(cmd.Env, "XDG_CACHE_HOME="+t.TempDir())
	_, stderr, err := testenv.RunCmdErr(cmd)
	return store, stderr, err
}

// TestPullThrough: upstream = nginx serving what `nix copy --to file://`
// wrote, signed by a key playing cache.nixos.org's, 20 ms away behind the
// latency proxy; registry = docker-registry. Eight real Nix clients at
// once, with only serve in their substituters, realise a closure never
// pushed into empty stores: nginx's access log shows each NAR fetched
// once, and each path is stored once. Then the registry holds every path
// unchanged (nixoci inspect of each path tag, oras lists the tags) with
// the closure of the root asked for, a fresh serve without --upstream
// substitutes the whole closure from the registry alone, and what oras
// pulls of the closure's tag is a binary cache Nix copies from.
func TestPullThrough(t *testing.T) {
	fx := testenv.BuildFixture(t, "pull")
	up := newUpstreamCache(t, fx.App)
	far := "http://" + startLatencyProxyTo(t, up.Nginx.URL(), 20*time.Millisecond)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	repo := reg.Ref("nix")
	srv := startServe(t, nil, "--from", repo, "--upstream", far, "--upstream-key", up.Key.Public)

	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			store, stderr, err := realiseAlone(t, srv.URL, up.Key.Public, fx.App)
			if err != nil {
				t.Errorf("client %d: nix-store --realise through serve pulling from upstream: %v\n%s", i, err, stderr)
				return
			}
			for _, p := range fx.Closure {
				testenv.TreesEqual(t, p, filepath.Join(store, p))
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	waitMetric(t, srv.URL, `nixoci_upstream_stores_total{outcome="stored"}`, float64(len(fx.Closure)))
	gets := up.narGets(t)
	for _, f := range up.narFiles(t) {
		if gets[f] != 1 {
			t.Errorf("nginx served %s %d times to eight clients, want once", f, gets[f])
		}
	}
	if n := metric(t, srv.URL, `nixoci_upstream_stores_total{outcome="stored"}`); n != float64(len(fx.Closure)) {
		t.Errorf("%v paths stored, want %d", n, len(fx.Closure))
	}

	tags := registryTags(t, repo)
	for _, p := range fx.Closure {
		hash := spec.PathTag(p)
		if !contains(tags, hash) {
			t.Errorf("oras repo tags: no tag %s for %s (tags %v)", hash, p, tags)
			continue
		}
		var s struct {
			Paths []struct {
				StorePath  string   `json:"storePath"`
				Signatures []string `json:"signatures"`
			} `json:"paths"`
		}
		if err := json.Unmarshal([]byte(run(t, "inspect", "--json", repo+":"+hash)), &s); err != nil {
			t.Fatal(err)
		}
		if len(s.Paths) != 1 || s.Paths[0].StorePath != p || len(s.Paths[0].Signatures) != 1 || !strings.HasPrefix(s.Paths[0].Signatures[0], up.Key.Name+":") {
			t.Errorf("nixoci inspect %s: %+v, want %s with the upstream's signature alone", hash, s.Paths, p)
		}
	}

	// The registry alone: a fresh serve without --upstream.
	alone := startServe(t, nil, "--from", repo)
	store, stderr, err := realise(t, alone.URL, up.Key.Public, fx.App)
	if err != nil {
		t.Fatalf("nix-store --realise from the registry alone: %v\n%s", err, stderr)
	}
	for _, p := range fx.Closure {
		testenv.TreesEqual(t, p, filepath.Join(store, p))
	}

	// The closure of the root the clients asked for: nixoci inspect lists
	// it whole, and oras pull of its tag is a binary cache with the
	// upstream's own NAR files.
	waitMetric(t, srv.URL, `nixoci_upstream_closures_total`, 1)
	closureTag := spec.PulledClosureTag(fx.App)
	for _, tag := range registryTags(t, repo) {
		// Besides the root's closure, the records of what was pulled
		// (pulled.<day>.<instance>.<n>, SPEC.md 14.5).
		if strings.HasPrefix(tag, "pulled.") && tag != closureTag && strings.Count(tag, ".") != 3 {
			t.Errorf("a closure tag %s besides the root's %s", tag, closureTag)
		}
	}
	var cs struct {
		Roots []string          `json:"roots"`
		Paths []json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal([]byte(run(t, "inspect", "--json", repo+":"+closureTag)), &cs); err != nil {
		t.Fatal(err)
	}
	if len(cs.Roots) != 1 || cs.Roots[0] != fx.App || len(cs.Paths) != len(fx.Closure) {
		t.Errorf("nixoci inspect %s: roots %v, %d paths; want %s and its closure of %d", closureTag, cs.Roots, len(cs.Paths), fx.App, len(fx.Closure))
	}
	pulled := t.TempDir()
	oras(t, "pull", "--plain-http", repo+":"+closureTag, "-o", pulled)
	for _, f := range up.narFiles(t) {
		want, _ := os.ReadFile(filepath.Join(up.Dir, f))
		got, err := os.ReadFile(filepath.Join(pulled, f))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: oras pulled %d bytes (%v), not the upstream's %d", f, len(got), err, len(want))
		}
	}
	copyAndCompare(t, pulled, up.Key.Public, fx.App, fx.Closure)
}

// TestPullThroughBadUpstream: an upstream whose narinfo has no signature
// or a wrong one, whose NAR does not match its signed NarHash, whose file
// does not match its FileHash, or that resets mid-NAR for good: nothing is
// stored, the real Nix gets an error (never wrong content), and serve's
// log names the upstream and the path. An upstream answering 503 for a
// path is a 5xx from serve.
func TestPullThroughBadUpstream(t *testing.T) {
	key := testenv.GenerateKey(t, "cache.nixos.org-1")
	other := testenv.GenerateKey(t, "other-1")
	names := []string{"nosig", "wrongsig", "badnar", "badfile", "reset", "unavail"}
	paths := map[string]string{}
	for _, n := range names {
		script := "echo " + n + " > $out"
		if n == "reset" { // large enough for the proxy to pass half of it on
			script = "head -c 2000000 /dev/urandom > $out"
		}
		paths[n] = testenv.BuildDerivation(t, "pullbad-"+n, script)
	}
	dir := t.TempDir()
	args := []string{"copy", "--to", "file://" + dir + "?secret-key=" + key.SecretFile}
	for _, n := range names {
		args = append(args, paths[n])
	}
	testenv.Run(t, "nix", args...)

	infoFile := func(n string) string { return filepath.Join(dir, spec.PathTag(paths[n])+".narinfo") }
	edit := func(n string, change func(*narinfo.NarInfo)) *narinfo.NarInfo {
		data, err := os.ReadFile(infoFile(n))
		if err != nil {
			t.Fatal(err)
		}
		info, err := narinfo.Parse(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		change(info)
		if data, err = info.Format(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(infoFile(n), data, 0o644); err != nil {
			t.Fatal(err)
		}
		return info
	}
	sign := func(info *narinfo.NarInfo, k testenv.KeyPair) {
		sk, err := narinfo.LoadSecretKey(k.SecretFile)
		if err != nil {
			t.Fatal(err)
		}
		info.Sigs = nil
		if err := info.AddSignature(sk); err != nil {
			t.Fatal(err)
		}
	}
	edit("nosig", func(i *narinfo.NarInfo) { i.Sigs = nil })
	edit("wrongsig", func(i *narinfo.NarInfo) { sign(i, other) })
	edit("badnar", func(i *narinfo.NarInfo) {
		i.NarHash = "sha256:" + strings.Repeat("0", 52)
		sign(i, key)
	})
	badfile := edit("badfile", func(*narinfo.NarInfo) {})
	file, err := os.ReadFile(filepath.Join(dir, badfile.URL))
	if err != nil {
		t.Fatal(err)
	}
	file[len(file)/2] ^= 1
	if err := os.WriteFile(filepath.Join(dir, badfile.URL), file, 0o644); err != nil {
		t.Fatal(err)
	}
	reset := edit("reset", func(*narinfo.NarInfo) {})

	ng := testenv.StartNginxStatic(t, dir)
	unavail := "/" + spec.PathTag(paths["unavail"]) + ".narinfo"
	faults := testenv.StartFaultProxy(t, ng.Addr, testenv.FaultOptions{
		Reset: 1, MaxConsecutive: -1,
		Only: func(r *http.Request) bool { return r.URL.Path == "/"+reset.URL },
	})
	down := testenv.StartFaultProxy(t, faults.Addr, testenv.FaultOptions{
		Status503: 1, MaxConsecutive: -1,
		Only: func(r *http.Request) bool { return r.URL.Path == unavail },
	})
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	srv := startServe(t, nil, "--from", reg.Ref("nix"), "--upstream", down.URL(), "--upstream-key", key.Public, "--backend-timeout", "3s")

	var wg sync.WaitGroup
	for _, n := range names[:5] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			store, _, err := realiseAlone(t, srv.URL, key.Public, paths[n], "download-attempts", "1")
			if err == nil {
				t.Errorf("%s: Nix realised a path from a bad upstream", n)
			}
			// (Nix may leave what it unpacked of a cut NAR; it is not
			// valid.)
			if _, _, err := testenv.RunErr(t, "nix-store", "--store", store, "--check-validity", paths[n]); err == nil {
				t.Errorf("%s: the path is valid in the client's store", n)
			}
		}()
	}
	resp, err := http.Get(srv.URL + unavail)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 500 {
		t.Errorf("upstream 503 for a narinfo: serve answered %d, want 5xx", resp.StatusCode)
	}
	wg.Wait()
	waitMetric(t, srv.URL, `nixoci_upstream_nars_total{outcome="failed",upstream="`+down.URL()+`"}`, 3) // badnar, badfile, reset
	logs := srv.Logs()
	for _, n := range names[:5] {
		if !strings.Contains(logs, paths[n]) {
			t.Errorf("serve's log does not name %s", paths[n])
		}
	}
	if !strings.Contains(logs, "upstream="+down.URL()) {
		t.Errorf("serve's log does not name the upstream %s", down.URL())
	}
	tags := registryTags(t, reg.Ref("nix"))
	for _, n := range names {
		if contains(tags, spec.PathTag(paths[n])) {
			t.Errorf("%s: stored from a bad upstream", n)
		}
	}
	if n := metric(t, srv.URL, `nixoci_upstream_stores_total{outcome="stored"}`); n != 0 {
		t.Errorf("%v paths stored", n)
	}
}
