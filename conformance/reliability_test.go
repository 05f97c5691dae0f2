package conformance

import (
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// The reliability tests run nixoci against a real registry behind a
// fault-injecting proxy, kill pushes at random moments, and run pushes
// side by side, and check that nothing is ever lost or left half-visible.
// Short by default; NIXOCI_RELIABILITY_LONG=1 runs many more rounds.
// Figures and the commands to rerun them are in RELIABILITY.md.

// TestFaultyRegistry: pushes, pulls and substitution through a registry
// that resets connections, answers 500/503/429 and stalls.
//
//   - retried: with faults on (seeded, at most 2 in a row per request),
//     push (xz and zstd) succeeds and gives the same closure digest as a
//     clean push; pull through the faults gives the same files as a clean
//     pull; the real Nix substitutes the closure through `nixoci serve`
//     reading through the faults.
//   - forever-*: with 503 on every request that may fail (the closure
//     manifest, or everything), push fails within a bounded time with an
//     error naming the registry, and no closure tag exists. These pushes
//     start first and are checked last.
//   - stall: with NIXOCI_TIMEOUT=2s and stalls of 10s, each stall is cut
//     by the timeout and push succeeds after retries, in bounded time.
//   - stall-upload: a stall while the registry should be reading a 32 MiB
//     upload body is also cut by the timeout.
func TestFaultyRegistry(t *testing.T) {
	fx := testenv.BuildFixture(t, "faulty")
	key := testenv.GenerateKey(t, "faulty-1")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	seed := relSeed(t, 1)
	// Build the binary once before the subtests.
	nixoci(t, "--help")

	// Faults that never stop: the push must give up, say which registry
	// failed, and leave no closure tag. Giving up takes the whole retry
	// budget, about 10-20 s, so these pushes start first and run in the
	// background while the other subtests run; the last subtests check
	// them. (go test runs at most GOMAXPROCS parallel subtests at once, so
	// t.Parallel alone would not overlap them on a small machine.)
	type foreverCase struct {
		name string
		p    *testenv.FaultProxy
		push *killablePush
	}
	var forevers []foreverCase
	for _, tc := range []struct {
		name string
		only func(repo string) func(*http.Request) bool
	}{
		{"forever-closure-manifest", func(repo string) func(*http.Request) bool {
			return func(r *http.Request) bool {
				return r.Method == http.MethodPut && r.URL.Path == "/v2/"+repo+"/manifests/c"
			}
		}},
		{"forever-everything", func(string) func(*http.Request) bool { return nil }},
	} {
		p := testenv.StartFaultProxy(t, reg.Addr, testenv.FaultOptions{
			Seed: seed, Status503: 1, MaxConsecutive: -1, Only: tc.only(tc.name),
		})
		push := startPush(t, nil, "--to", p.Ref(tc.name)+":c", "--sign-key", key.SecretFile, fx.App)
		t.Cleanup(func() { push.cmd.Process.Kill() })
		forevers = append(forevers, foreverCase{tc.name, p, push})
	}

	// Seeded faults that retries outlast; the long setting runs more
	// rounds, each with another seed.
	t.Run("retried", func(t *testing.T) {
		phase := func(p *testenv.FaultProxy, name string, before map[string]int, start time.Time, stderr string) {
			after := p.Counts()
			diff := map[string]int{}
			for k, v := range after {
				if d := v - before[k]; d > 0 {
					diff[k] = d
				}
			}
			t.Logf("%s: %v, faults survived: %s; operation retries logged: %d", name,
				time.Since(start).Round(10*time.Millisecond), testenv.FormatCounts(diff),
				strings.Count(stderr, "transient failure, retrying"))
		}
		clean := map[string]string{}
		cleanDirs := map[string]string{}
		for _, comp := range []string{"xz", "zstd"} {
			clean[comp] = lastLine(run(t, "push", "--to", reg.Ref("clean-"+comp)+":c", "--compression", comp,
				"--sign-key", key.SecretFile, fx.App))
			cleanDirs[comp] = t.TempDir()
			run(t, "pull", reg.Ref("clean-"+comp)+":c", "--to", cleanDirs[comp])
		}
		total := map[string]int{}
		requests := 0
		for round := range relShort(1, 10) {
			p := testenv.StartFaultProxy(t, reg.Addr, testenv.FaultOptions{
				Seed: seed + int64(round)*1000, Reset: 0.10, Status500: 0.05, Status503: 0.05, TooMany: 0.05,
			})
			for _, comp := range []string{"xz", "zstd"} {
				repo := fmt.Sprintf("faulty-%s-%d", comp, round)
				before, start := p.Counts(), time.Now()
				stdout, stderr, err := testenv.RunCmdErr(nixoci(t, "push", "--to", p.Ref(repo)+":c",
					"--compression", comp, "--sign-key", key.SecretFile, fx.App))
				if err != nil {
					t.Fatalf("push through faults (%s): %v", testenv.FormatCounts(p.Counts()), err)
				}
				phase(p, "push "+repo, before, start, stderr)
				if got := lastLine(stdout); got != clean[comp] {
					t.Errorf("%s: push through faults gave closure %s, clean push %s", repo, got, clean[comp])
				}
				// What the registry itself holds, without the proxy.
				if _, err := relCheckClosure(newRegistryStore(reg, repo), "c", len(fx.Closure)); err != nil {
					t.Errorf("%s: %v", repo, err)
				}
				relCheckAll(t, newRegistryStore(reg, repo))

				faultyDir := t.TempDir()
				before, start = p.Counts(), time.Now()
				_, stderr, err = testenv.RunCmdErr(nixoci(t, "pull", p.Ref(repo)+":c", "--to", faultyDir))
				if err != nil {
					t.Fatalf("pull through faults: %v", err)
				}
				phase(p, "pull "+repo, before, start, stderr)
				testenv.TreesEqual(t, cleanDirs[comp], faultyDir)
			}
			if p.Faults() == 0 {
				t.Errorf("round %d: no fault was injected in %d requests", round, p.Requests())
			}
			for k, v := range p.Counts() {
				total[k] += v
			}
			requests += p.Requests()

			// The real Nix substitutes through serve, which reads through
			// a proxy faulting about half of the requests (a substitution
			// makes only a few). serve's backend operations are retried,
			// and blob bodies cut short resumed; what still fails reaches
			// Nix as a 5xx or a broken transfer, which Nix retries.
			sp := testenv.StartFaultProxy(t, reg.Addr, testenv.FaultOptions{
				Seed: seed + int64(round)*1000 + 1, Reset: 0.25, Status500: 0.10, Status503: 0.10, TooMany: 0.05,
			})
			srv := startServe(t, nil, "--from", sp.Ref(fmt.Sprintf("faulty-xz-%d", round)), "--access-log=false")
			start := time.Now()
			store, stderr, err := realise(t, srv.URL, key.Public, fx.App)
			if err != nil {
				t.Fatalf("nix-store --realise through serve and faults (%s): %v\n%s", testenv.FormatCounts(sp.Counts()), err, stderr)
			}
			phase(sp, fmt.Sprintf("serve to nix-store --realise (%d requests)", sp.Requests()), nil, start, "")
			for _, path := range fx.Closure {
				testenv.TreesEqual(t, path, filepath.Join(store, path))
			}
			if sp.Faults() == 0 {
				t.Errorf("round %d: no fault was injected in the %d requests of the substitution", round, sp.Requests())
			}
			for k, v := range sp.Counts() {
				total[k] += v
			}
			requests += sp.Requests()
		}
		t.Logf("%d rounds: %d requests through the proxies, faults survived: %s",
			relShort(1, 10), requests, testenv.FormatCounts(total))
	})

	// A registry that stops answering for 10 s at a time, with a 2 s
	// timeout: each stall must be cut by the timeout, and then either
	// retried to success or reported clearly; either way in bounded time.
	t.Run("stall", func(t *testing.T) {
		const stallFor = 10 * time.Second
		p := testenv.StartFaultProxy(t, reg.Addr, testenv.FaultOptions{Seed: seed, Stall: 0.15, StallFor: stallFor})
		cmd := nixoci(t, "push", "--to", p.Ref("stall")+":c", "--sign-key", key.SecretFile, fx.App)
		cmd.Env = append(cmd.Env, "NIXOCI_TIMEOUT=2s")
		start := time.Now()
		stdout, stderr, err := testenv.RunCmdErr(cmd)
		elapsed := time.Since(start)
		stalls := p.Counts()[testenv.FaultStall]
		outcome := "succeeded"
		if err != nil {
			outcome = "failed: " + lastLine(stderr)
		}
		t.Logf("push with %d stalls of %v in %d requests: %v; operation retries logged: %d; %s", stalls, stallFor,
			p.Requests(), elapsed.Round(100*time.Millisecond), strings.Count(stderr, "transient failure, retrying"), outcome)
		for _, r := range p.Log() {
			if r.Fault == testenv.FaultStall {
				t.Logf("stall: %s %s, ended after %v (the client left, or StallFor passed)", r.Method, r.Path, r.Duration.Round(10*time.Millisecond))
			}
		}
		if stalls == 0 {
			t.Errorf("no stall was injected")
		}
		// Each stall cut by the 2 s timeout, then retried with at most
		// 3 s of backoff; stalls waited out in full would cost 10 s each.
		if bound := 15*time.Second + time.Duration(stalls)*5*time.Second; elapsed > bound {
			t.Errorf("push took %v with %d stalls; the timeout should bound each to about 2 s (bound %v)", elapsed, stalls, bound)
		}
		if err != nil {
			msg := lastLine(stderr)
			if !strings.Contains(msg, p.Ref("stall")) {
				t.Errorf("the error does not name the registry %s: %s", p.Ref("stall"), msg)
			}
			t.Fatalf("push with stalls failed: %v", err)
		}
		if !strings.HasPrefix(lastLine(stdout), "sha256:") {
			t.Errorf("push printed %q", lastLine(stdout))
		}
		if _, err := relCheckClosure(newRegistryStore(reg, "stall"), "c", len(fx.Closure)); err != nil {
			t.Error(err)
		}
	})

	// A stall while the registry should read a 32 MiB upload body, larger
	// than the socket buffers: the client is blocked writing the body, not
	// waiting for headers, and the timeout must cut that too.
	t.Run("stall-upload", func(t *testing.T) {
		const stallFor = 30 * time.Second
		c := newSynthCache(t)
		big := make([]byte, 32<<20)
		rand.New(rand.NewSource(seed)).Read(big)
		bigPath := synthStorePath("stall-upload-big")
		c.add(bigPath, fileNAR(t, string(big)), nil, nil)
		p := testenv.StartFaultProxy(t, reg.Addr, testenv.FaultOptions{
			Seed: seed, Stall: 1, StallFor: stallFor, MaxConsecutive: 1,
			Only: func(r *http.Request) bool {
				return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/")
			},
		})
		cmd := nixoci(t, "push", "--to", p.Ref("stall-upload")+":c", "--from-cache", c.url(), bigPath)
		cmd.Env = append(cmd.Env, "NIXOCI_TIMEOUT=2s")
		start := time.Now()
		_, stderr, err := testenv.RunCmdErr(cmd)
		elapsed := time.Since(start)
		t.Logf("push of a 32 MiB NAR, every blob upload stalled once for %v: %v, %s; failed: %v",
			stallFor, elapsed.Round(100*time.Millisecond), testenv.FormatCounts(p.Counts()), err != nil)
		if err != nil {
			t.Fatalf("push failed: %v\n%s", err, lastLine(stderr))
		}
		if elapsed >= stallFor {
			t.Errorf("a stalled upload body was waited out (push took %v, stall %v) instead of being cut by NIXOCI_TIMEOUT=2s", elapsed, stallFor)
		}
		if _, err := relCheckClosure(newRegistryStore(reg, "stall-upload"), "c", 1); err != nil {
			t.Error(err)
		}
	})

	for _, f := range forevers {
		t.Run(f.name, func(t *testing.T) {
			repo, p := f.name, f.p
			err := <-f.push.done
			elapsed := f.push.end.Sub(f.push.start)
			stderr := f.push.stderr.String()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatalf("push: %v", err)
			}
			t.Logf("push gave up after %v, %d requests, %s; exit %d; last line: %s", elapsed.Round(100*time.Millisecond),
				p.Requests(), testenv.FormatCounts(p.Counts()), code, lastLine(stderr))
			// The retry budget: backend.RetryAttempts (10) attempts of
			// the failing operation, with at most 18.75 s of waits.
			if elapsed > 60*time.Second {
				t.Errorf("push took %v to give up", elapsed)
			}
			if code != 1 {
				t.Errorf("exit code %d, want 1\n%s", code, stderr)
			}
			msg := lastLine(stderr)
			for _, want := range []string{p.Ref(repo), "503"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error does not name %q: %s", want, msg)
				}
			}
			tags := registryTags(t, reg.Ref(repo)) // the registry itself
			if contains(tags, "c") {
				t.Errorf("closure tag exists after a failed push: %v", tags)
			}
			if repo == "forever-closure-manifest" {
				// Every store path was complete before the closure
				// failed: each keeps its tag, as SPEC section 6 says.
				for _, path := range fx.Closure {
					if !contains(tags, spec.PathTag(path)) {
						t.Errorf("path %s lost its tag", path)
					}
				}
			}
			relCheckAll(t, newRegistryStore(reg, repo))
		})
	}
}

// TestCrashConsistency: a push killed with SIGKILL at a random moment
// leaves a target that every tool reads, whose tags all name complete
// artifacts; running the push again completes it with the same digest
// and without storing again what was already stored. One variant pushes
// into an image layout, the other into a registry; they run side by side.
// Half the runs are killed after a random part of a clean push's time,
// the others as soon as the target shows a random number of path tags
// but no closure tag (timing alone, on a loaded machine, may miss that
// window); each variant must have had kills in it.
func TestCrashConsistency(t *testing.T) {
	runs := relShort(10, 50)
	seed := relSeed(t, 1)
	c := newSynthCache(t)
	// A registry push is about 10 times slower than a layout push on a
	// small machine: the short setting gives it a smaller closure so the
	// test stays under a minute. The layout's closure is large enough
	// that its push outlasts a few flushes of its tags (every 500 ms).
	layoutRoot, layoutN := c.tree("crash-layout", relShort(10, 20), relShort(20, 40))
	regRoot, regN := c.tree("crash-registry", relShort(5, 15), relShort(19, 25))
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	tmp := t.TempDir() // TMPDIR of the pushes, to count what killed ones leave
	env := []string{"TMPDIR=" + tmp}
	// More uploads in flight at the moment of the kill, and shorter runs.
	const jobs = "16"
	pushArgs := func(to, root string) []string {
		return []string{"--to", to, "--jobs", jobs, "--from-cache", c.url(), root}
	}
	push := func(t *testing.T, to, root string) (string, time.Duration) {
		t.Helper()
		cmd := nixoci(t, append([]string{"push"}, pushArgs(to, root)...)...)
		cmd.Env = append(cmd.Env, env...)
		start := time.Now()
		out := testenv.RunCmd(t, cmd)
		return lastLine(out), time.Since(start)
	}
	// killedPush starts a push and kills it: in even runs after a random
	// part of a clean push's time, in odd runs once s shows at least a
	// random number of the n path tags and no closure tag. It says when
	// the kill came and whether the push was still running then.
	killedPush := func(t *testing.T, i int, rng *rand.Rand, cleanTime time.Duration, to, root string, s relStore, n int) (string, bool) {
		t.Helper()
		p := startPush(t, env, pushArgs(to, root)...)
		var killed bool
		var err error
		var when string
		if i%2 == 0 {
			delay := time.Duration(rng.Int63n(int64(cleanTime)))
			killed, err = p.killAfter(delay)
			when = fmt.Sprintf("after %v", delay.Round(time.Millisecond))
		} else {
			k := 1 + rng.Intn(max(1, n/2))
			killed, err = p.killWhen(func() bool {
				tags, err := s.Tags()
				_, closure := tags["crash"]
				return err == nil && len(tags) >= k && !closure
			})
			when = fmt.Sprintf("at %d+ path tags, after %v", k, p.end.Sub(p.start).Round(time.Millisecond))
		}
		if !killed && err != nil {
			t.Fatalf("run %d: push failed before the kill: %v\n%s", i, err, p.stderr.String())
		}
		return when, killed
	}
	t.Cleanup(func() {
		left, _ := filepath.Glob(filepath.Join(tmp, "nixoci-nar-*"))
		t.Logf("temporary NAR files left in TMPDIR by killed pushes: %d", len(left))
	})

	t.Run("layout", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		cleanDigest, cleanTime := push(t, "oci:"+filepath.Join(t.TempDir(), "clean")+":crash", layoutRoot)
		t.Logf("closure of %d paths, %s; clean push %v", layoutN, cleanDigest, cleanTime.Round(time.Millisecond))
		rng := rand.New(rand.NewSource(seed))
		var f crashFigures
		for i := range runs {
			dir := filepath.Join(t.TempDir(), "l")
			to := "oci:" + dir + ":crash"
			s := layoutStore{dir}
			when, killed := killedPush(t, i, rng, cleanTime, to, layoutRoot, s, layoutN)

			tagsAfterKill, closure := 0, false
			// Without oci-layout (killed while creating it) the directory
			// is not a layout yet; the re-run makes it one.
			if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err == nil {
				tagged := relCheckAll(t, s)
				relCheckLayoutTools(t, dir, tagged)
				tagsAfterKill = len(tagged)
				if _, closure = tagged["crash"]; closure {
					tagsAfterKill--
					if _, err := relCheckClosure(s, "crash", layoutN); err != nil {
						t.Errorf("run %d: closure tag after the kill: %v", i, err)
					}
				}
			}
			f.count(killed, tagsAfterKill, closure)
			before := layoutBlobFiles(t, dir)

			got, rerun := push(t, to, layoutRoot)
			if got != cleanDigest {
				t.Errorf("run %d: re-run gave closure %s, clean push %s", i, got, cleanDigest)
			}
			after := layoutBlobFiles(t, dir)
			for path, id := range before {
				f.blobsBefore++
				if after[path] != id {
					f.rewritten++
					t.Errorf("run %d: the re-run rewrote %s (%+v -> %+v)", i, path, id, after[path])
				}
			}
			tagged := relCheckAll(t, s)
			relCheckLayoutTools(t, dir, tagged)
			// Path tags, the closure tag, the referrers index of its root
			// and that of its push records.
			if len(tagged) != layoutN+3 {
				t.Errorf("run %d: %d tags after the re-run, want %d", i, len(tagged), layoutN+3)
			}
			if _, err := relCheckClosure(s, "crash", layoutN); err != nil {
				t.Errorf("run %d: %v", i, err)
			}
			leftovers, _ := filepath.Glob(filepath.Join(dir, "ingest", "*"))
			idxTmp, _ := filepath.Glob(filepath.Join(dir, ".index.json.*"))
			f.garbage += len(leftovers) + len(idxTmp)
			t.Logf("run %d: kill %s (killed: %v): %d path tags, closure tag %v, %d blobs; re-run %v; %d leftover temporary files",
				i, when, killed, tagsAfterKill, closure, len(before), rerun.Round(time.Millisecond), len(leftovers)+len(idxTmp))
		}
		f.report(t, runs, seed, start)
	})

	t.Run("registry", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		cleanDigest, cleanTime := push(t, reg.Ref("crash-clean")+":crash", regRoot)
		t.Logf("closure of %d paths, %s; clean push %v", regN, cleanDigest, cleanTime.Round(time.Millisecond))
		// The re-runs go through a proxy that injects nothing and logs
		// every request.
		counter := testenv.StartFaultProxy(t, reg.Addr, testenv.FaultOptions{})
		rng := rand.New(rand.NewSource(seed))
		var f crashFigures
		for i := range runs {
			repo := fmt.Sprintf("crash-%d", i)
			s := newRegistryStore(reg, repo)
			when, killed := killedPush(t, i, rng, cleanTime, reg.Ref(repo)+":crash", regRoot, s, regN)

			tagged := relCheckAll(t, s)
			tagsAfterKill := len(tagged)
			_, closure := tagged["crash"]
			if closure {
				tagsAfterKill--
				if _, err := relCheckClosure(s, "crash", regN); err != nil {
					t.Errorf("run %d: closure tag after the kill: %v", i, err)
				}
			}
			f.count(killed, tagsAfterKill, closure)
			before := registryRepoBlobs(t, reg, repo)
			f.blobsBefore += len(before)

			logStart := len(counter.Log())
			got, rerun := push(t, counter.Ref(repo)+":crash", regRoot)
			if got != cleanDigest {
				t.Errorf("run %d: re-run gave closure %s, clean push %s", i, got, cleanDigest)
			}
			log := counter.Log()[logStart:]
			puts, posts := blobUploadsOf(log, before)
			allPuts, _ := blobUploadsOf(log, registryRepoBlobs(t, reg, repo))
			f.rewritten += puts + posts
			if puts+posts > 0 {
				t.Errorf("run %d: the re-run uploaded again %d blobs the repository had (%d POSTs)", i, puts, posts)
			}
			tagged = relCheckAll(t, s)
			if len(tagged) != regN+3 { // as in the layout
				t.Errorf("run %d: %d tags after the re-run, want %d", i, len(tagged), regN+3)
			}
			if _, err := relCheckClosure(s, "crash", regN); err != nil {
				t.Errorf("run %d: %v", i, err)
			}
			t.Logf("run %d: kill %s (killed: %v): %d path tags, closure tag %v, %d blobs; re-run %v: %d requests, %d blob uploads",
				i, when, killed, tagsAfterKill, closure, len(before), rerun.Round(time.Millisecond), len(log), allPuts)
		}
		f.report(t, runs, seed, start)
	})
}

// crashFigures sum up the runs of one TestCrashConsistency variant.
type crashFigures struct {
	completed              int // pushes that finished before their kill
	beforeTags             int // killed before any path tag was written
	midPush                int // killed with path tags written but no closure tag
	afterClosure           int // killed after the closure tag (while cleaning up)
	tagsAfterKill          int // path tags found after kills (each checked complete)
	closureAfterKill       int // closure tags found after kills (checked complete)
	blobsBefore, rewritten int // blobs stored before re-runs; of those, stored again
	garbage                int // temporary files left in the target
}

// count classifies a run by what its kill left.
func (f *crashFigures) count(killed bool, pathTags int, closure bool) {
	f.tagsAfterKill += pathTags
	if closure {
		f.closureAfterKill++
	}
	switch {
	case !killed:
		f.completed++
	case closure:
		f.afterClosure++
	case pathTags == 0:
		f.beforeTags++
	default:
		f.midPush++
	}
}

// report logs the figures and fails the test unless some kill came in
// the middle of a push: between its first path tag and its closure tag.
func (f crashFigures) report(t *testing.T, runs int, seed int64, start time.Time) {
	t.Logf("%d runs: killed %d before any tag, %d mid-push (path tags, no closure tag), %d after the closure tag; %d finished before the kill; "+
		"after the kills %d path tags and %d closure tags were found, all complete; the re-runs stored again %d of the %d blobs already stored; "+
		"%d temporary files left in the target; %v",
		runs, f.beforeTags, f.midPush, f.afterClosure, f.completed, f.tagsAfterKill, f.closureAfterKill, f.rewritten, f.blobsBefore, f.garbage,
		time.Since(start).Round(100*time.Millisecond))
	if f.midPush == 0 {
		t.Errorf("no push was killed between its first path tag and its closure tag (seed %d): the runs did not test a half-written closure", seed)
	}
}

// killWhen sends SIGKILL as soon as ready holds (polled every few
// milliseconds) unless the push has finished; it reports whether the
// kill interrupted it, and the push's error if not.
func (p *killablePush) killWhen(ready func() bool) (killed bool, err error) {
	tick := time.NewTicker(5 * time.Millisecond) // polling interval
	defer tick.Stop()
	for {
		select {
		case err := <-p.done:
			return false, err
		case <-tick.C:
		}
		if ready() {
			p.cmd.Process.Signal(syscall.SIGKILL)
			return true, <-p.done
		}
	}
}

// TestConcurrentPushes: 8 pushes of overlapping closures at once into
// one image layout, then into one registry repository, while `nixoci
// serve` answers narinfo and NAR requests from the same target: every
// push succeeds with the digest a lone push gives, every tag names a
// complete artifact, and serve never answers 5xx or a bad narinfo.
func TestConcurrentPushes(t *testing.T) {
	const writers = 8
	c := newSynthCache(t)
	roots, sizes, distinct := relSharedClosures(c, "conc", writers, relShort(4, 8), relShort(4, 10), 6, relShort(30, 80))
	seedPath := synthStorePath("conc-seed")
	c.add(seedPath, fileNAR(t, seedPath), nil, nil)
	// The reader also asks for paths no closure has (unused shared leaves).
	var allHashes []string
	entries, _ := os.ReadDir(c.dir)
	for _, e := range entries {
		if h, ok := strings.CutSuffix(e.Name(), ".narinfo"); ok {
			allHashes = append(allHashes, h)
		}
	}
	sort.Strings(allHashes)
	seed := relSeed(t, 1)
	total := 0
	for _, s := range sizes {
		total += s
	}
	t.Logf("%d closures of %v paths (%d distinct paths in all)", writers, sizes, len(distinct))

	// The digests a lone push gives, one closure at a time.
	want := make([]string, writers)
	lone := "oci:" + filepath.Join(t.TempDir(), "lone")
	for k, r := range roots {
		want[k] = lastLine(run(t, "push", "--to", fmt.Sprintf("%s:c%d", lone, k), "--from-cache", c.url(), r))
	}

	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	layoutDir := filepath.Join(t.TempDir(), "shared")
	for _, tc := range []struct {
		name, target string
		store        relStore
	}{
		{"layout", "oci:" + layoutDir, layoutStore{layoutDir}},
		{"registry", reg.Ref("shared"), newRegistryStore(reg, "shared")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			run(t, "push", "--to", tc.target+":seed", "--from-cache", c.url(), seedPath)
			srv := startServe(t, nil, "--from", tc.target, "--negative-ttl", "1ms", "--access-log=false")

			stop, done := make(chan struct{}), make(chan readerFigures)
			go func() { done <- relReader(t, srv.URL, tc.store, allHashes, seed, stop) }()

			pushes := make([]*killablePush, writers)
			for k, r := range roots {
				pushes[k] = startPush(t, nil, "--to", fmt.Sprintf("%s:c%d", tc.target, k), "--from-cache", c.url(), r)
			}
			var failed []int // pushes failed by the registry's known race
			for k, p := range pushes {
				if err := p.wait(); err != nil {
					if strings.Contains(p.stderr.String(), "manifest blob unknown") {
						failed = append(failed, k)
						t.Logf("push %d failed: %s", k, lastLine(p.stderr.String()))
						continue
					}
					t.Errorf("push %d: %v", k, err)
					continue
				}
				if got := lastLine(p.stdout.String()); got != want[k] {
					t.Errorf("push %d gave closure %s, a lone push %s", k, got, want[k])
				}
			}
			pushTime := time.Since(start)
			close(stop)
			rf := <-done

			// A failed push leaves no closure tag, and running it again
			// completes it.
			if len(failed) > 0 {
				tags, err := tc.store.Tags()
				if err != nil {
					t.Fatal(err)
				}
				for _, k := range failed {
					if _, ok := tags[fmt.Sprintf("c%d", k)]; ok {
						t.Errorf("failed push %d left its closure tag", k)
					}
					if got := lastLine(run(t, "push", "--to", fmt.Sprintf("%s:c%d", tc.target, k), "--from-cache", c.url(), roots[k])); got != want[k] {
						t.Errorf("re-run of failed push %d gave closure %s, a lone push %s", k, got, want[k])
					}
				}
			}

			tags := relCheckAll(t, tc.store)
			for k := range roots {
				if _, err := relCheckClosure(tc.store, fmt.Sprintf("c%d", k), sizes[k]); err != nil {
					t.Errorf("%v", err)
				}
			}
			// Each closure is also listed in the referrers index of its
			// root (one root each here), and has a referrers index of its
			// own, listing its push record (SPEC.md 10.1).
			referrers := 0
			for tag := range tags {
				if strings.HasPrefix(tag, "sha256-") {
					referrers++
				}
			}
			if want := len(distinct) + 1 + 3*(writers+1); len(tags) != want || referrers != 2*(writers+1) {
				t.Errorf("%d tags (%d referrers indexes), want %d (every path, the seed path, %d closures and the seed closure, each with the referrers index of its root and of its push record)", len(tags), referrers, want, writers)
			}
			if tc.name == "layout" {
				relCheckLayoutTools(t, layoutDir, tags)
			}
			t.Logf("%d concurrent pushes (%d path pushes, %d distinct) in %v; serve answered %d narinfo requests "+
				"(%d 200, %d 404, %d other) and %d NAR requests; %d index/tag reads (%d listed tags did not resolve yet)",
				writers, total, len(distinct), pushTime.Round(10*time.Millisecond), rf.narinfos, rf.ok, rf.notFound,
				rf.other, rf.nars, rf.listings, rf.unresolved)
			if len(failed) > 0 {
				t.Errorf("%d of %d concurrent pushes failed", len(failed), writers)
			}
		})
	}
}

type readerFigures struct {
	listings, narinfos, ok, notFound, other, nars int
	unresolved                                    int // listed tags that did not resolve yet
}

// relReader asks serve, until stop, for the narinfos of paths already
// tagged in s (which must be found) and of random paths (found or not),
// and for some NARs. Every answer must be 200 or 404 and every 200 a
// narinfo of the path asked for. Reading the layout's tags also checks
// that index.json parses at every moment.
func relReader(t *testing.T, url string, s relStore, all []string, seed int64, stop chan struct{}) readerFigures {
	rng := rand.New(rand.NewSource(seed))
	client := &http.Client{Timeout: 30 * time.Second}
	var f readerFigures
	var mu sync.Mutex
	errs := 0
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if errs++; errs <= 10 {
			t.Errorf(format, args...)
		}
	}
	get := func(u string) (int, []byte) {
		resp, err := client.Get(u)
		if err != nil {
			fail("GET %s: %v", u, err)
			return 0, nil
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			fail("GET %s: reading the body: %v", u, err)
		}
		return resp.StatusCode, body
	}
	for {
		select {
		case <-stop:
			return f
		default:
		}
		tags, err := s.Tags()
		f.listings++
		if err != nil {
			fail("reading the tags of %s while pushes run: %v", s, err)
			continue
		}
		var tagged []string
		for tag := range tags {
			if len(tag) == 32 {
				tagged = append(tagged, tag)
			}
		}
		sort.Strings(tagged)
		var ask []string
		var mustExist []bool
		for range 4 {
			if len(tagged) == 0 {
				break
			}
			h := tagged[rng.Intn(len(tagged))]
			// docker-registry lists a tag as soon as its directory
			// exists, a moment before the tag resolves: only a tag that
			// resolves when asked directly must be found through serve.
			if _, _, err := s.Manifest(h); err != nil {
				f.unresolved++
				continue
			}
			ask = append(ask, h)
			mustExist = append(mustExist, true)
		}
		for range 2 {
			ask = append(ask, all[rng.Intn(len(all))])
			mustExist = append(mustExist, false)
		}
		for i, h := range ask {
			code, body := get(url + "/" + h + ".narinfo")
			f.narinfos++
			switch code {
			case http.StatusOK:
				f.ok++
				info, err := narinfo.Parse(bytes.NewReader(body))
				if err != nil {
					fail("narinfo %s: 200 with a body that does not parse: %v\n%s", h, err, body)
					continue
				}
				if spec.PathTag(info.StorePath) != h {
					fail("narinfo %s: describes %s", h, info.StorePath)
				}
				if f.ok%4 == 0 {
					code, nar := get(url + "/" + info.URL)
					f.nars++
					if code != http.StatusOK || uint64(len(nar)) != info.FileSize {
						fail("NAR %s of %s: %d with %d bytes, want 200 with %d", info.URL, info.StorePath, code, len(nar), info.FileSize)
					}
				}
			case http.StatusNotFound:
				f.notFound++
				if mustExist[i] {
					fail("narinfo %s: 404 although its tag resolves", h)
				}
			default:
				f.other++
				fail("narinfo %s: status %d while pushes run: %s", h, code, body)
			}
		}
	}
}
