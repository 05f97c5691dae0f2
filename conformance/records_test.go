package conformance

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/spec"
)

// today is the UTC day serve names its records by.
func today() string { return time.Now().UTC().Format(time.DateOnly) }

// recordRoots reads a record with nixoci inspect: its roots and paths.
func recordRoots(t *testing.T, ref string) (roots, paths []string) {
	t.Helper()
	var c struct {
		Roots []string `json:"roots"`
		Paths []struct {
			StorePath string `json:"storePath"`
		} `json:"paths"`
	}
	if err := json.Unmarshal([]byte(run(t, "inspect", "--json", ref)), &c); err != nil {
		t.Fatal(err)
	}
	for _, p := range c.Paths {
		paths = append(paths, p.StorePath)
	}
	return c.Roots, paths
}

// waitPending polls serve's /metrics until no stored path waits to be
// recorded.
func waitPending(t *testing.T, srv *served) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for metric(t, srv.URL, `nixoci_serve_record_pending`) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("paths still wait to be recorded\n%s", srv.Logs())
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// nixCopyTo uploads root's closure to srv with the real Nix, with the
// credentials of TestServeRecordsUploads in its netrc-file.
func nixCopyTo(t *testing.T, srv *served, root string) {
	t.Helper()
	host, _, _ := strings.Cut(strings.TrimPrefix(srv.URL, "http://"), ":")
	netrc := filepath.Join(t.TempDir(), "netrc")
	os.WriteFile(netrc, []byte(fmt.Sprintf("machine %s login ci password rec-pw-3\n", host)), 0o600)
	cmd := testenv.Cmd(t, "nix", "copy", "--to", srv.URL, root, "--option", "netrc-file", netrc)
	cmd.Env = append(cmd.Env, "XDG_CACHE_HOME="+t.TempDir())
	if _, stderr, err := testenv.RunCmdErr(cmd); err != nil {
		t.Errorf("nix copy --to %s %s: %v\n%s", srv.URL, root, err, stderr)
	}
}

// TestServeRecordsUploads: two serve instances with --upload over one
// repository of distribution v3 (the referrers API: a record's replaced
// versions are deleted by serve, a collection would not find them); the real Nix uploads a closure to each at
// once (nix copy --to http://… with credentials from its netrc-file).
// One writes its records every second, the other only when it is
// stopped (SIGTERM). Each instance's record of the day lists what was
// uploaded to it; nixoci gc with no retention flags then deletes none of
// the uploaded paths (before records, it deleted them all), and a fresh
// serve without --upload substitutes both closures to Nix.
func TestServeRecordsUploads(t *testing.T) {
	fx1, fx2 := testenv.BuildFixture(t, "recup1"), testenv.BuildFixture(t, "recup2")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{Program: "registry", Deletes: true})
	repo := reg.Ref("up")
	key := testenv.GenerateKey(t, "rec-serve-1")
	creds := htpasswdFile(t, "-B", "ci", "rec-pw-3")
	a := startServe(t, nil, "--from", repo, "--upload", "--credentials", creds, "--sign-key", key.SecretFile, "--instance", "a", "--record-interval", "1h")
	b := startServe(t, nil, "--from", repo, "--upload", "--credentials", creds, "--sign-key", key.SecretFile, "--instance", "b", "--record-interval", "1s")

	var wg sync.WaitGroup
	for _, up := range []struct {
		srv  *served
		root string
	}{{a, fx1.App}, {b, fx2.App}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nixCopyTo(t, up.srv, up.root)
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// b writes every second; a when it stops.
	waitMetric(t, b.URL, `nixoci_serve_recorded_paths_total{kind="uploaded"}`, 2) // the 2 only it was given
	waitPending(t, b)
	if n := metric(t, a.URL, `nixoci_serve_recorded_paths_total{kind="uploaded"}`); n != 0 {
		t.Errorf("a recorded %v paths before it stopped, want 0 (interval 1h)", n)
	}
	a.stop(t)

	for _, c := range []struct {
		instance string
		fx       testenv.Fixture
	}{{"a", fx1}, {"b", fx2}} {
		roots, paths := recordRoots(t, repo+":"+spec.RecordTag(spec.RecordUploaded, today(), c.instance, 1))
		if !contains(roots, c.fx.App) || !contains(roots, c.fx.Data) {
			t.Errorf("record of %s: roots %v, want %s and %s among them", c.instance, roots, c.fx.App, c.fx.Data)
		}
		for _, p := range c.fx.Closure {
			if !contains(paths, p) {
				t.Errorf("record of %s: paths %v lack %s", c.instance, paths, p)
			}
		}
	}

	// One more upload to b, after its first write: the record is written
	// again, and the version replaced is gone: the record alone is a
	// referrer of its first root.
	written := metric(t, b.URL, `nixoci_serve_records_total{kind="uploaded",outcome="written"}`)
	extraFile := filepath.Join(t.TempDir(), "extra-recup")
	os.WriteFile(extraFile, []byte("one more upload\n"), 0o644)
	extra := strings.TrimSpace(testenv.Run(t, "nix-store", "--add", extraFile))
	nixCopyTo(t, b, extra)
	waitMetric(t, b.URL, `nixoci_serve_records_total{kind="uploaded",outcome="written"}`, written+1)
	waitPending(t, b)
	bTag := spec.RecordTag(spec.RecordUploaded, today(), "b", 1)
	roots, _ := recordRoots(t, repo+":"+bTag)
	target := openTarget(t, repo)
	aRecord, err := target.Resolve(t.Context(), spec.RecordTag(spec.RecordUploaded, today(), "a", 1))
	if err != nil {
		t.Fatal(err)
	}
	bRecord, err := target.Resolve(t.Context(), bTag)
	if err != nil {
		t.Fatal(err)
	}
	var closures []string
	for _, root := range roots {
		m, err := target.Resolve(t.Context(), spec.PathTag(root))
		if err != nil {
			t.Fatal(err)
		}
		if err := target.Referrers(t.Context(), m, spec.ArtifactTypeClosureV2, func(refs []ocispec.Descriptor) error {
			for _, r := range refs {
				if r.Digest != aRecord.Digest {
					closures = append(closures, r.Digest.String())
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if len(closures) != 1 || closures[0] != bRecord.Digest.String() {
		t.Errorf("closures referring to the roots of b's record: %v, want its current version %s alone", closures, bRecord.Digest)
	}

	out := run(t, "gc", "--grace", "0s", repo)
	tags := registryTags(t, repo)
	for _, p := range append(append(fx1.Closure, fx2.Closure...), extra) {
		if !contains(tags, spec.PathTag(p)) {
			t.Errorf("gc deleted the uploaded %s (tags %v)\n%s", p, tags, out)
		}
	}
	fresh := startServe(t, nil, "--from", repo, "--sign-key", key.SecretFile)
	for _, fx := range []testenv.Fixture{fx1, fx2} {
		store, stderr, err := realise(t, fresh.URL, key.Public, fx.App)
		if err != nil {
			t.Fatalf("nix-store --realise %s after gc: %v\n%s", fx.App, err, stderr)
		}
		for _, p := range fx.Closure {
			testenv.TreesEqual(t, p, filepath.Join(store, p))
		}
	}
}

// TestServeRecordsRetention: serve pulls through from nginx (a real
// upstream binary cache) into docker-registry; the instance "old" pulls
// one closure, the instance "new" another, sharing a path, seconds
// later. nixoci gc --match 'pulled.*' --keep-within D, with D between the
// two records' ages, removes the paths only the old record (and the old
// root's pulled closure) reached, and keeps the shared path, which the
// kept ones reach.
func TestServeRecordsRetention(t *testing.T) {
	fx1, fx2 := testenv.BuildFixture(t, "recpull1"), testenv.BuildFixture(t, "recpull2")
	up := newUpstreamCache(t, fx1.App, fx2.App)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{Deletes: true})
	repo := reg.Ref("pulled")
	pull := func(instance string, fx testenv.Fixture, stored int) {
		t.Helper()
		srv := startServe(t, nil, "--from", repo, "--upstream", up.Nginx.URL(), "--upstream-key", up.Key.Public,
			"--instance", instance, "--record-interval", "1s")
		if _, stderr, err := realiseAlone(t, srv.URL, up.Key.Public, fx.App); err != nil {
			t.Fatalf("nix-store --realise through serve: %v\n%s", err, stderr)
		}
		waitMetric(t, srv.URL, `nixoci_upstream_closures_total`, 1)
		waitMetric(t, srv.URL, `nixoci_serve_recorded_paths_total{kind="pulled"}`, float64(stored))
		srv.stop(t)
	}
	pull("old", fx1, 3)
	oldDone := time.Now()
	// Retention by age needs the old record to age: nothing to poll for.
	time.Sleep(6 * time.Second)
	newStart := time.Now()
	pull("new", fx2, 2) // the busybox path is in the registry already

	oldRecord := spec.RecordTag(spec.RecordPulled, today(), "old", 1)
	newRecord := spec.RecordTag(spec.RecordPulled, today(), "new", 1)
	_, paths := recordRoots(t, repo+":"+newRecord)
	if !contains(paths, fx2.Busybox) {
		t.Errorf("%s lists %v, not the reference %s the registry held", newRecord, paths, fx2.Busybox)
	}
	// Between the ages: the new record's plus 3 s (for gc to start), the
	// old one's at least 3 s more.
	within := time.Since(newStart) + 3*time.Second
	if time.Since(oldDone) <= within {
		t.Fatalf("the records are too close in age for the test: %v, %v", time.Since(oldDone), within)
	}
	out := run(t, "gc", "--match", "pulled.*", "--keep-within", within.Round(time.Millisecond).String(), "--grace", "0s", repo)
	tags := registryTags(t, repo)
	for _, gone := range []string{oldRecord, spec.PulledClosureTag(fx1.App), spec.PathTag(fx1.App), spec.PathTag(fx1.Data)} {
		if contains(tags, gone) {
			t.Errorf("after gc --keep-within %v: %s is still tagged\n%s", within, gone, out)
		}
	}
	for _, kept := range []string{newRecord, spec.PulledClosureTag(fx2.App), spec.PathTag(fx2.App), spec.PathTag(fx2.Data), spec.PathTag(fx2.Busybox)} {
		if !contains(tags, kept) {
			t.Errorf("after gc --keep-within %v: %s is gone (tags %v)\n%s", within, kept, tags, out)
		}
	}
}
