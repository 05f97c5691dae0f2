package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/gc"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/spec"
)

// gcTarget is one place the gc tests run against: an image layout, or a
// repository of a real registry (distribution 2.8 or 3).
type gcTarget struct {
	name    string
	ref     string // oci:DIR or HOST:PORT/REPO
	layout  string // the layout's directory
	program string // the registry's binary
	reg     *testenv.Registry
}

func (g gcTarget) String() string { return g.ref }

// gcTargets starts a layout and, for each registry implementation, a
// registry with deletes enabled.
func gcTargets(t *testing.T) []gcTarget {
	dir := filepath.Join(t.TempDir(), "layout")
	return []gcTarget{
		{name: "layout", ref: "oci:" + dir, layout: dir},
		{name: "docker-registry", program: "docker-registry"},
		{name: "distribution-v3", program: "registry"},
	}
}

// repo is another repository of the same registry, or another layout.
func (g gcTarget) repo(t *testing.T, name string) gcTarget {
	if g.reg != nil {
		g.ref = g.reg.Ref(name)
		return g
	}
	g.layout = filepath.Join(t.TempDir(), name)
	g.ref = "oci:" + g.layout
	return g
}

// start starts the target's registry, if it is one.
func (g *gcTarget) start(t *testing.T) {
	if g.program != "" {
		g.reg = testenv.StartRegistry(t, testenv.RegistryOptions{Program: g.program, Deletes: true})
		g.ref = g.reg.Ref("cache")
	}
}

// open opens the target with the library, for checks.
func (g gcTarget) open(t *testing.T) backend.Target {
	t.Helper()
	ref, err := backend.ParseRef(g.ref)
	if err != nil {
		t.Fatal(err)
	}
	tg, err := backend.Open(context.Background(), ref, backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// tags lists the target's tags.
func (g gcTarget) tags(t *testing.T) []string {
	t.Helper()
	var out []string
	if err := g.open(t).Tags(context.Background(), "", func(page []string) error {
		out = append(out, page...)
		return nil
	}); err != nil && !strings.Contains(err.Error(), "NAME_UNKNOWN") {
		t.Fatalf("%s: listing tags: %v", g, err)
	}
	slices.Sort(out)
	return out
}

// snapshot is what a target holds, to tell that a dry run changed
// nothing: a layout's files, or a registry's storage files.
func (g gcTarget) snapshot(t *testing.T) map[string]string {
	t.Helper()
	root := g.layout
	if g.reg != nil {
		root = g.reg.Dir
	}
	return fixture.FileDigests(t, root)
}

// gcRun runs nixoci gc --json with args and returns its result.
func gcRun(t *testing.T, target string, args ...string) *gc.Result {
	t.Helper()
	out := run(t, append(append([]string{"gc", "--json"}, args...), target)...)
	var res gc.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("gc --json: %v\n%s", err, out)
	}
	return &res
}

// foreign puts another tool's artifacts into the target: a plain image
// copied in with skopeo and an oras artifact. The returned check fails
// the test unless both are still there, whole.
func foreign(t *testing.T, g gcTarget) (check func()) {
	t.Helper()
	plainDir := filepath.Join(t.TempDir(), "plain")
	testenv.Run(t, "umoci", "init", "--layout", plainDir)
	testenv.Run(t, "umoci", "new", "--image", plainDir+":plain")
	file := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(file, []byte("another tool's artifact\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var plainRef string
	var orasArgs []string
	if g.layout != "" {
		plainRef = "oci:" + g.layout + ":plain"
		orasArgs = []string{"--oci-layout", g.layout + ":notes"}
	} else {
		plainRef = "docker://" + g.ref + ":plain"
		orasArgs = []string{"--plain-http", g.ref + ":notes"}
	}
	testenv.Run(t, "skopeo", "copy", "--dest-tls-verify=false", "oci:"+plainDir+":plain", plainRef)
	dir := filepath.Dir(file)
	cmd := testenv.Cmd(t, "oras", append(append([]string{"push", "--artifact-type", "application/x-notes"}, orasArgs...), "notes.txt:text/plain")...)
	cmd.Dir = dir
	testenv.RunCmd(t, cmd)
	return func() {
		t.Helper()
		back := filepath.Join(t.TempDir(), "plain-back")
		if _, stderr, err := testenv.RunErr(t, "skopeo", "copy", "--src-tls-verify=false", plainRef, "oci:"+back+":plain"); err != nil {
			t.Errorf("the plain image did not survive: %v\n%s", err, stderr)
		}
		out := t.TempDir()
		pull := append([]string{"pull"}, orasArgs...)
		if _, stderr, err := testenv.RunErr(t, "oras", append(pull, "-o", out)...); err != nil {
			t.Errorf("the oras artifact did not survive: %v\n%s", err, stderr)
		} else if data, err := os.ReadFile(filepath.Join(out, "notes.txt")); err != nil || string(data) != "another tool's artifact\n" {
			t.Errorf("the oras artifact pulls as %q, %v", data, err)
		}
	}
}

// checkWhole walks everything tag names at the target: every manifest
// (through indexes and parts) is stored and matches its digest, every
// blob is stored with its size (and, in a layout, read and verified),
// and every store path of a closure is found by its tag.
func checkWhole(t *testing.T, tg backend.Target, tag string) error {
	t.Helper()
	ctx := context.Background()
	desc, data, err := backend.FetchManifest(ctx, tg, tag)
	if err != nil {
		return fmt.Errorf("tag %s: %w", tag, err)
	}
	_, isLayout := tg.(*backend.Layout)
	seen := map[digest.Digest]bool{}
	var walk func(d ocispec.Descriptor, data []byte) error
	walk = func(d ocispec.Descriptor, data []byte) error {
		succ, err := backend.Successors(d, data)
		if err != nil {
			return err
		}
		for _, s := range succ {
			if seen[s.Digest] {
				continue
			}
			seen[s.Digest] = true
			if backend.IsManifest(s.MediaType) {
				sd, err := backend.FetchAll(ctx, tg, s, backend.MaxManifestRead)
				if err != nil {
					return fmt.Errorf("tag %s: manifest %s: %w", tag, s.Digest, err)
				}
				if err := walk(s, sd); err != nil {
					return err
				}
				continue
			}
			if !isLayout {
				got, err := tg.ResolveBlob(ctx, s.Digest)
				if err != nil || got.Size != s.Size {
					return fmt.Errorf("tag %s: blob %s: size %d, want %d (%v)", tag, s.Digest, got.Size, s.Size, err)
				}
				continue
			}
			rc, err := tg.Fetch(ctx, s)
			if err == nil {
				rc, err = backend.VerifyReader(rc, s)
			}
			if err == nil {
				_, err = io.Copy(io.Discard, rc)
				rc.Close()
			}
			if err != nil {
				return fmt.Errorf("tag %s: blob %s: %w", tag, s.Digest, err)
			}
		}
		return nil
	}
	if err := walk(desc, data); err != nil {
		return err
	}
	c, err := artifact.ReadClosure(ctx, tg, tag)
	if err != nil {
		return nil // not a closure: walked is enough
	}
	paths, err := artifact.ClosurePaths(ctx, tg, c, 8)
	if err != nil {
		return fmt.Errorf("closure %s: %w", tag, err)
	}
	for _, p := range paths {
		if _, err := artifact.FetchPath(ctx, tg, p.Info.StorePath); err != nil {
			return fmt.Errorf("closure %s: path tag of %s: %w", tag, p.Info.StorePath, err)
		}
		if h := spec.PathTag(p.Info.StorePath); c.Version == spec.Version && h != tag {
			if err := checkWhole(t, tg, h); err != nil {
				return err
			}
		}
	}
	return nil
}

// narinfoStatus asks serve for a store path's narinfo.
func narinfoStatus(t *testing.T, srv *served, storePath string) int {
	t.Helper()
	resp, err := http.Get(srv.URL + "/" + spec.PathTag(storePath) + ".narinfo")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestGCFollowsClosures (issue 13, points 1, 4 and 5): closures c1 and c2
// sharing a path, beside another tool's artifacts, in a layout and in
// docker-registry and distribution 3. After `nixoci rm T:c1`, `gc
// --dry-run` lists exactly c1's private paths and changes nothing (serve
// still answers them); `gc` removes them: serve answers 404 for them and
// 200 for c2's, the real Nix substitutes c2, oras and umoci read the
// layout, the registry's own garbage-collect frees their blobs and c2
// still substitutes; the other artifacts survive.
func TestGCFollowsClosures(t *testing.T) {
	fx1 := testenv.BuildFixture(t, "gc-c1")
	fx2 := testenv.BuildFixture(t, "gc-c2")
	key := testenv.GenerateKey(t, "gc-1")
	for _, g := range gcTargets(t) {
		t.Run(g.name, func(t *testing.T) {
			g.start(t)
			run(t, "push", "--to", g.ref+":c1", "--sign-key", key.SecretFile, fx1.App)
			run(t, "push", "--to", g.ref+":c2", "--sign-key", key.SecretFile, fx2.App)
			checkForeign := foreign(t, g)

			stderr, code := runFail(t, "rm", g.ref+":plain")
			if code != 1 || !strings.Contains(stderr, "not a nixoci closure or image") {
				t.Errorf("rm of a plain image: exit %d, %q; want it refused", code, stderr)
			}
			run(t, "rm", g.ref+":c1")
			if tags := g.tags(t); slices.Contains(tags, "c1") || !slices.Contains(tags, "c2") {
				t.Fatalf("tags after rm: %v", tags)
			}

			before := g.snapshot(t)
			dry := gcRun(t, g.ref, "--dry-run", "--grace", "0s")
			private := []string{fx1.App, fx1.Data}
			slices.Sort(private)
			if got := dry.StorePaths(); !slices.Equal(got, private) {
				t.Errorf("dry run lists paths %v, want c1's private paths %v", got, private)
			}
			if dry.Bytes == 0 {
				t.Error("dry run counts 0 bytes")
			}
			if after := g.snapshot(t); !maps.Equal(before, after) {
				t.Error("the dry run changed the target")
			}
			srv := startServe(t, nil, "--from", g.ref, "--negative-ttl", "1ms", "--access-log=false")
			for _, p := range private {
				if code := narinfoStatus(t, srv, p); code != http.StatusOK {
					t.Errorf("after the dry run, serve answers %d for %s", code, p)
				}
			}

			res := gcRun(t, g.ref, "--grace", "0s")
			if got := res.StorePaths(); !slices.Equal(got, private) {
				t.Errorf("gc removed paths %v, want %v", got, private)
			}
			srv = startServe(t, nil, "--from", g.ref, "--negative-ttl", "1ms", "--access-log=false")
			for _, p := range private {
				if code := narinfoStatus(t, srv, p); code != http.StatusNotFound {
					t.Errorf("after gc, serve answers %d for %s, want 404", code, p)
				}
			}
			for _, p := range fx2.Closure {
				if code := narinfoStatus(t, srv, p); code != http.StatusOK {
					t.Errorf("after gc, serve answers %d for %s of c2, want 200", code, p)
				}
			}
			tg := g.open(t)
			if err := checkWhole(t, tg, "c2"); err != nil {
				t.Error(err)
			}
			substitutes(t, srv, key, fx2)
			if g.layout != "" {
				tags := g.tags(t)
				relCheckLayoutTools(t, g.layout, mapOf(tags))
				dir := t.TempDir()
				oras(t, "pull", "--oci-layout", g.layout+":c2", "-o", dir)
				copyAndCompare(t, dir, key.Public, fx2.App, fx2.Closure)
				testenv.Run(t, "umoci", "unpack", "--image", g.layout+":plain", filepath.Join(t.TempDir(), "bundle"))
			} else {
				size := g.reg.BlobBytes()
				g.reg.GarbageCollect()
				if after := g.reg.BlobBytes(); size-after < res.Bytes {
					t.Errorf("%s garbage-collect freed %d bytes of blobs (%d -> %d), gc said %d would go", g.name, size-after, size, after, res.Bytes)
				} else {
					t.Logf("%s garbage-collect: blob store %d -> %d bytes (gc said %d bytes)", g.name, size, after, res.Bytes)
				}
				srv = startServe(t, nil, "--from", g.ref, "--negative-ttl", "1ms", "--access-log=false")
				substitutes(t, srv, key, fx2)
				if err := checkWhole(t, tg, "c2"); err != nil {
					t.Errorf("after the registry's garbage-collect: %v", err)
				}
			}
			checkForeign()
			again := gcRun(t, g.ref, "--grace", "0s")
			for _, it := range again.Removed {
				if it.Kind != gc.KindMarker {
					t.Errorf("a second gc removed %s %s %s", it.Kind, it.Digest, it.StorePath)
				}
			}
			checkForeign()
		})
	}
}

// substitutes realises fx's closure through serve with the real Nix.
func substitutes(t *testing.T, srv *served, key testenv.KeyPair, fx testenv.Fixture) {
	t.Helper()
	store, stderr, err := realise(t, srv.URL, key.Public, fx.App)
	if err != nil {
		t.Fatalf("nix-store --realise %s through serve: %v\n%s", fx.App, err, stderr)
	}
	for _, p := range fx.Closure {
		testenv.TreesEqual(t, p, filepath.Join(store, p))
	}
}

func mapOf(tags []string) map[string]digest.Digest {
	m := map[string]digest.Digest{}
	for _, tag := range tags {
		m[tag] = ""
	}
	return m
}

// TestGCRefusedDeletes: a registry that refuses deletes (distribution
// with storage.delete.enabled false answers 405 UNSUPPORTED) makes rm
// and gc fail with a clear error before anything changes.
func TestGCRefusedDeletes(t *testing.T) {
	fx := testenv.BuildFixture(t, "gc-nodel")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{Deletes: true})
	target := reg.Ref("cache")
	run(t, "push", "--to", target+":c1", fx.App)
	reg.SetDeletes(false)
	g := gcTarget{name: "no-delete", ref: target, reg: reg}
	before := g.snapshot(t)
	for _, args := range [][]string{{"rm", target + ":c1"}, {"gc", "--grace", "0s", target}} {
		stderr, code := runFail(t, args...)
		if code != 1 || !strings.Contains(stderr, "does not allow deleting") || !strings.Contains(stderr, "storage.delete.enabled") {
			t.Errorf("nixoci %s: exit %d, %q; want a clear refusal", args[0], code, stderr)
		}
	}
	if after := g.snapshot(t); !maps.Equal(before, after) {
		t.Error("the refused rm and gc changed the registry")
	}
	dry := gcRun(t, target, "--dry-run")
	if dry.DeletesRefused == "" {
		t.Error("a dry run does not say that deletes are refused")
	}
}

// TestGCRetention (issue 13, points 2 and 5; issue 22): closures ci-1 …
// ci-5 pushed in order; `gc --match 'ci-*' --keep-last 0` is refused
// (exit 2) and changes nothing; `gc --match 'ci-*' --keep-last 2` keeps
// ci-4 and ci-5 and
// their paths, drops the others and their private paths, and keeps a tag
// --match does not select; where ci-1 was pushed again before the run,
// ci-1 and ci-5 stay.
func TestGCRetention(t *testing.T) {
	c := newSynthCache(t)
	shared := synthStorePath("ret-shared")
	c.add(shared, fileNAR(t, shared), nil, nil)
	roots := map[string]string{}
	private := map[string][]string{}
	for _, tag := range []string{"ci-1", "ci-2", "ci-3", "ci-4", "ci-5", "release"} {
		leaf := synthStorePath("ret-leaf-" + tag)
		c.add(leaf, fileNAR(t, leaf), nil, nil)
		root := synthStorePath("ret-root-" + tag)
		c.add(root, fileNAR(t, root), []string{filepath.Base(leaf), filepath.Base(shared)}, nil)
		roots[tag], private[tag] = root, []string{root, leaf}
	}
	for _, g := range gcTargets(t) {
		t.Run(g.name, func(t *testing.T) {
			g.start(t)
			for _, tc := range []struct {
				name   string
				repush bool
				keep   []string
			}{
				{"in-order", false, []string{"ci-4", "ci-5", "release"}},
				{"ci-1-pushed-again", true, []string{"ci-1", "ci-5", "release"}},
			} {
				g := g.repo(t, tc.name)
				for _, tag := range []string{"ci-1", "ci-2", "ci-3", "ci-4", "ci-5", "release"} {
					run(t, "push", "--to", g.ref+":"+tag, "--from-cache", c.url(), roots[tag])
				}
				if tc.repush {
					run(t, "push", "--to", g.ref+":ci-1", "--from-cache", c.url(), roots["ci-1"])
				}
				if !tc.repush {
					// 0 does not mean "unlimited": refused, nothing changes.
					before := g.snapshot(t)
					stderr, code := runFail(t, "gc", "--match", "ci-*", "--keep-last", "0", "--grace", "0s", g.ref)
					if code != 2 || !strings.Contains(stderr, "--keep-none") {
						t.Errorf("gc --keep-last 0: exit %d, %q; want 2 naming --keep-none", code, stderr)
					}
					if after := g.snapshot(t); !maps.Equal(before, after) {
						t.Error("a refused gc --keep-last 0 changed the target")
					}
				}
				res := gcRun(t, g.ref, "--match", "ci-*", "--keep-last", "2", "--grace", "0s")
				var closures []string
				for _, tag := range g.tags(t) {
					if _, ok := roots[tag]; ok {
						closures = append(closures, tag)
					}
				}
				if !slices.Equal(closures, tc.keep) {
					t.Errorf("%s: closure tags left %v, want %v", tc.name, closures, tc.keep)
				}
				var gone []string
				for tag, paths := range private {
					if !slices.Contains(tc.keep, tag) {
						gone = append(gone, paths...)
					}
				}
				slices.Sort(gone)
				if got := res.StorePaths(); !slices.Equal(got, gone) {
					t.Errorf("%s: removed paths %v, want %v", tc.name, got, gone)
				}
				var dropped []string
				for _, tt := range res.Dropped {
					dropped = append(dropped, tt.Tag)
				}
				slices.Sort(dropped)
				if len(res.Kept) != 2 || len(dropped) != 3 || slices.ContainsFunc(dropped, func(tag string) bool { return slices.Contains(tc.keep, tag) }) {
					t.Errorf("%s: retention kept %v, dropped %v", tc.name, res.Kept, dropped)
				}
				tg := g.open(t)
				for _, tag := range tc.keep {
					if err := checkWhole(t, tg, tag); err != nil {
						t.Errorf("%s: %v", tc.name, err)
					}
				}
				for _, p := range gone {
					if _, err := artifact.FetchPath(context.Background(), tg, p); err == nil {
						t.Errorf("%s: %s is still tagged", tc.name, p)
					}
				}
			}
		})
	}
}

// TestGCGraceAcrossRuns (issue 22): gc never waits for its grace period.
// With nothing to delete, `nixoci gc --grace 1h` returns in the time its
// reads take; after `rm` of a closure, a run with --grace 1h deletes
// nothing, lists its private paths as pending and says when they become
// deletable; runs with a real grace period of 3 s delete them once it
// is over, not before, each path after two marks at least 3 s apart;
// the other closure stays whole. On a layout, docker-registry and
// distribution 3.
func TestGCGraceAcrossRuns(t *testing.T) {
	const grace = 3 * time.Second
	c := newSynthCache(t)
	shared := synthStorePath("grace-shared")
	c.add(shared, fileNAR(t, shared), nil, nil)
	roots := map[string]string{}
	var private []string
	for _, tag := range []string{"c1", "c2"} {
		leaf := synthStorePath("grace-leaf-" + tag)
		c.add(leaf, fileNAR(t, leaf), nil, nil)
		root := synthStorePath("grace-root-" + tag)
		c.add(root, fileNAR(t, root), []string{filepath.Base(leaf), filepath.Base(shared)}, nil)
		roots[tag] = root
		if tag == "c1" {
			private = []string{leaf, root}
		}
	}
	slices.Sort(private)
	pendingPaths := func(res *gc.Result) []string {
		var out []string
		for _, it := range res.Pending {
			if it.Kind == gc.KindPath {
				out = append(out, it.StorePath)
			}
		}
		slices.Sort(out)
		return out
	}
	for _, g := range gcTargets(t) {
		t.Run(g.name, func(t *testing.T) {
			g.start(t)
			for tag, root := range roots {
				run(t, "push", "--to", g.ref+":"+tag, "--from-cache", c.url(), root)
			}
			start := time.Now()
			res := gcRun(t, g.ref, "--grace", "1h")
			if len(res.Removed) != 0 || len(res.Pending) != 0 {
				t.Errorf("with nothing to delete: removed %+v, pending %+v", res.Removed, res.Pending)
			}
			t.Logf("nixoci gc --grace 1h with nothing to delete: %v (the collection itself %v)", time.Since(start).Round(time.Millisecond), res.Took.Round(time.Millisecond))

			run(t, "rm", g.ref+":c1")
			cmd := nixoci(t, "gc", "--dry-run", "--grace", "1h", g.ref)
			stdout, stderr, err := testenv.RunCmdErr(cmd)
			if err != nil {
				t.Fatal(err)
			}
			mustContain(t, "gc --dry-run --grace 1h", stdout, "pending path "+private[0], "pending path "+private[1], "deletable from")
			mustContain(t, "gc --dry-run --grace 1h", stderr, "would remove nothing", "unreachable for less than --grace 1h0m0s: deletable from", "run nixoci gc again then")
			start = time.Now()
			first := gcRun(t, g.ref, "--grace", "1h")
			if len(first.Removed) != 0 || !slices.Equal(pendingPaths(first), private) || !first.NextDeletable.Equal(first.Marked.Add(time.Hour)) {
				t.Errorf("the first run with --grace 1h: removed %+v, pending %v, next %v; want nothing removed, %v pending until an hour after %v",
					first.Removed, pendingPaths(first), first.NextDeletable, private, first.Marked)
			}
			t.Logf("nixoci gc --grace 1h with %d candidates: %v (the collection itself %v); they become deletable at %v",
				len(first.Pending), time.Since(start).Round(time.Millisecond), first.Took.Round(time.Millisecond), first.NextDeletable.Format(time.RFC3339))

			// With a grace period of 3 s, runs delete what the first run
			// found once 3 s are over, and not before.
			var removed []string
			for range 3 {
				res := gcRun(t, g.ref, "--grace", grace.String())
				for _, it := range res.Removed {
					if it.Kind != gc.KindPath {
						continue
					}
					removed = append(removed, it.StorePath)
					if !it.Since.Equal(first.Marked) || res.Marked.Sub(it.Since) < grace {
						t.Errorf("removed %s unreachable since %v at a mark at %v; want since the first run's mark %v, at least %v before", it.StorePath, it.Since, res.Marked, first.Marked, grace)
					}
				}
				for _, it := range res.Pending {
					if !it.DeletableAt.Equal(it.Since.Add(grace)) || it.Kind == gc.KindPath && !it.Since.Equal(first.Marked) {
						t.Errorf("pending %s %s: since %v, deletable %v", it.Kind, it.StorePath, it.Since, it.DeletableAt)
					}
				}
				if len(res.Pending) == 0 {
					break
				}
				// Waiting out the real grace period, as the next cron run would.
				time.Sleep(time.Until(res.NextDeletable))
			}
			slices.Sort(removed)
			if !slices.Equal(removed, private) {
				t.Errorf("removed %v across the runs, want %v", removed, private)
			}
			if tags := g.tags(t); slices.Contains(tags, spec.GCMarkTag) {
				t.Errorf("the mark record is still tagged with nothing pending: %v", tags)
			}
			if err := checkWhole(t, g.open(t), "c2"); err != nil {
				t.Error(err)
			}
		})
	}
}

// gcFigures counts what racing collections, pushes and copies did.
type gcFigures struct {
	runs, removed, paths, spared, pending int
	pushes, copies, waited, restored      int
	failed                                int // writers that failed (cleanly) and were run again
}

// gcRun is one collection of a race, as --json told it.
type gcRaceRun struct {
	started time.Time
	res     gc.Result
}

// checkTwoMarks fails the test unless every store path a run removed was
// found unreachable by an earlier run at least grace before (the run
// whose mark is the removed item's Since, listing it as pending) and by
// every run between.
func checkTwoMarks(t *testing.T, runs []gcRaceRun, grace time.Duration) {
	t.Helper()
	key := func(it gc.Item) string { return it.Kind + " " + it.Digest.String() }
	pending := make([]map[string]bool, len(runs))
	for i, r := range runs {
		pending[i] = map[string]bool{}
		for _, it := range r.res.Pending {
			pending[i][key(it)] = true
		}
	}
	checked := 0
	for k, r := range runs {
		for _, it := range r.res.Removed {
			if it.Kind != gc.KindPath {
				continue
			}
			checked++
			first := -1
			for j := range k {
				if runs[j].res.Marked.Equal(it.Since) {
					first = j
				}
			}
			switch {
			case first < 0 || !pending[first][key(it)]:
				t.Errorf("run %d removed %s, unreachable since %v: no earlier run found it unreachable then", k, it.StorePath, it.Since)
			case r.res.Marked.Sub(runs[first].res.Marked) < grace:
				t.Errorf("run %d removed %s %v after run %d first found it unreachable, less than the grace period %v",
					k, it.StorePath, r.res.Marked.Sub(runs[first].res.Marked), first, grace)
			default:
				for m := first + 1; m < k; m++ {
					if !pending[m][key(it)] {
						t.Errorf("run %d removed %s, which run %d (between run %d and it) did not find unreachable", k, it.StorePath, m, first)
					}
				}
			}
		}
	}
	t.Logf("each of the %d store paths removed was found unreachable by two runs at least %v apart, and by every run between", checked, grace)
}

// gcRaceGrace is the grace period of the collections racing pushes: a
// real one, short enough for many deletions during the race.
const gcRaceGrace = 1500 * time.Millisecond

// gcRaceInterval is how often the race starts a collection (a cron
// job's schedule, compressed): each runs to its end without waiting.
const gcRaceInterval = time.Second

// TestGCConcurrentPushes (issue 13, points 3, 4 and 5; issue 22): in each
// round every closure tag is removed, so that all their paths are
// garbage; `nixoci gc --grace 1.5s` runs every second from a loop, never
// waiting, while 8 pushes of those overlapping closures and 2 `nixoci
// copy` of two of them from another repository start spread over the
// seconds in which the first collection's candidates become due (the
// last push once a collection has deleted something): the pushes and
// copies reuse paths the collections delete under them.
// Afterwards every tag names complete content (every blob walked), every
// closure substitutes with the real Nix, another tool's artifacts are
// still there, and every path removed was found unreachable by two runs
// at least the grace period apart (the runs are logged). On a layout,
// docker-registry and distribution 3.
func TestGCConcurrentPushes(t *testing.T) {
	const writers, copies = 8, 2
	rounds := relShort(2, 6)
	c := newSynthCache(t)
	roots, sizes, distinct := relSharedClosures(c, "gcconc", writers, relShort(3, 8), relShort(3, 10), 6, relShort(20, 60))
	key := testenv.GenerateKey(t, "gcconc-1")
	t.Logf("%d closures of %v paths (%d distinct paths), %d rounds", writers, sizes, len(distinct), rounds)
	for _, g := range gcTargets(t) {
		t.Run(g.name, func(t *testing.T) {
			g.start(t)
			checkForeign := foreign(t, g)
			src := g.repo(t, "copy-source")
			for k, r := range roots {
				run(t, "push", "--to", fmt.Sprintf("%s:c%d", g.ref, k), "--sign-key", key.SecretFile, "--from-cache", c.url(), r)
			}
			for k := range copies {
				run(t, "push", "--to", fmt.Sprintf("%s:d%d", src.ref, k), "--sign-key", key.SecretFile, "--from-cache", c.url(), roots[k])
				run(t, "copy", fmt.Sprintf("%s:d%d", src.ref, k), g.ref)
			}
			var f gcFigures
			var runs []gcRaceRun
			for round := range rounds {
				var tags []string
				for k := range roots {
					tags = append(tags, fmt.Sprintf("%s:c%d", g.ref, k))
				}
				for k := range copies {
					tags = append(tags, fmt.Sprintf("%s:d%d", g.ref, k))
				}
				run(t, append([]string{"rm"}, tags...)...)
				// Collections start every gcRaceInterval; writers start
				// 1 s after the first collection's mark, 0.3 s apart,
				// around the time what it found becomes due. The last
				// closure's push waits until a collection has deleted
				// something (its private paths, which no other writer
				// reuses): every round deletes, however slow the registry.
				done := make(chan struct{})
				firstMarked := make(chan time.Time, 1)
				removedSome := make(chan struct{})
				var removedOnce sync.Once
				var mu sync.Mutex
				var collected sync.WaitGroup
				collected.Add(1)
				roundStart := time.Now()
				go func() {
					defer collected.Done()
					defer removedOnce.Do(func() { close(removedSome) })
					defer func() {
						select {
						case firstMarked <- time.Now(): // a run failed: the writers need not wait
						default:
						}
					}()
					tick := time.NewTicker(gcRaceInterval)
					defer tick.Stop()
					for last := false; !last; {
						select {
						case <-done:
							last = true // one more, after the writers
						default:
						}
						started := time.Now()
						stdout, stderr, err := testenv.RunCmdErr(nixoci(t, "gc", "--json", "--grace", gcRaceGrace.String(), g.ref))
						if err != nil {
							t.Errorf("round %d: gc racing pushes: %v\n%s", round, err, stderr)
							return
						}
						var res gc.Result
						if err := json.Unmarshal([]byte(stdout), &res); err != nil {
							t.Errorf("gc --json: %v", err)
							return
						}
						select {
						case firstMarked <- res.Marked:
						default:
						}
						if res.Paths > 0 {
							removedOnce.Do(func() { close(removedSome) })
						}
						mu.Lock()
						runs = append(runs, gcRaceRun{started, res})
						f.runs++
						f.removed += len(res.Removed)
						f.paths += res.Paths
						f.spared += res.Spared
						f.pending += len(res.Pending)
						mu.Unlock()
						next := ""
						if len(res.Pending) > 0 {
							next = fmt.Sprintf(", deletable from +%v", res.NextDeletable.Sub(roundStart).Round(time.Millisecond))
						}
						t.Logf("round %d, gc run %d at +%v: marked at +%v, removed %d items (%d paths), spared %d, %d pending%s; took %v",
							round, len(runs)-1, started.Sub(roundStart).Round(time.Millisecond), res.Marked.Sub(roundStart).Round(time.Millisecond),
							len(res.Removed), res.Paths, res.Spared, len(res.Pending), next, res.Took.Round(time.Millisecond))
						if !last {
							select {
							case <-tick.C:
							case <-done:
							}
						}
					}
				}()
				type writer struct {
					name string
					p    *killablePush
					redo []string
				}
				var ws []writer
				m0 := <-firstMarked
				for k, r := range roots {
					if k == len(roots)-1 {
						select {
						case <-removedSome:
						case <-time.After(time.Minute):
						}
					} else {
						<-time.After(time.Until(m0.Add(time.Second + time.Duration(k)*300*time.Millisecond)))
					}
					args := []string{"push", "--to", fmt.Sprintf("%s:c%d", g.ref, k), "--sign-key", key.SecretFile, "--from-cache", c.url(), r}
					ws = append(ws, writer{fmt.Sprintf("push c%d", k), startNixoci(t, nil, args...), args})
					if k%4 == 1 && k/4 < copies {
						args := []string{"copy", fmt.Sprintf("%s:d%d", src.ref, k/4), g.ref}
						ws = append(ws, writer{fmt.Sprintf("copy d%d", k/4), startNixoci(t, nil, args...), args})
					}
				}
				var failed []writer
				for _, w := range ws {
					err := w.p.wait()
					if strings.HasPrefix(w.name, "copy") {
						f.copies++
					} else {
						f.pushes++
					}
					log := w.p.stderr.String()
					f.waited += strings.Count(log, "a garbage collection is running")
					f.restored += strings.Count(log, "stored again paths") + strings.Count(log, "copying again")
					if err != nil {
						failed = append(failed, w)
						t.Logf("round %d: %s failed:\n%s", round, w.name, log)
					}
				}
				close(done)
				collected.Wait()
				// A writer that lost against collections fails without its
				// closure tag; run again, it completes.
				have := g.tags(t)
				for _, w := range failed {
					f.failed++
					if tag := w.redo[2][strings.LastIndex(w.redo[2], ":")+1:]; w.redo[0] == "push" && slices.Contains(have, tag) {
						t.Errorf("round %d: failed %s left its closure tag", round, w.name)
					}
					run(t, w.redo...)
				}
			}
			checkTwoMarks(t, runs, gcRaceGrace)
			final := gcRun(t, g.ref, "--grace", "0s")
			for _, it := range final.Removed {
				if it.Kind == gc.KindPath {
					t.Errorf("the final gc removed %s, which a closure reaches", it.StorePath)
				}
			}
			tg := g.open(t)
			all := g.tags(t)
			for _, tag := range all {
				if err := checkWhole(t, tg, tag); err != nil {
					t.Errorf("after the race: %v", err)
				}
			}
			paths := 0
			for _, tag := range all {
				if spec.ClassifyTag(tag) == spec.TagPath {
					paths++
				}
			}
			if paths != len(distinct) {
				t.Errorf("%d path tags after the race, want %d (every path of the closures)", paths, len(distinct))
			}
			srv := startServe(t, nil, "--from", g.ref, "--negative-ttl", "1ms", "--access-log=false")
			for _, r := range roots {
				if _, stderr, err := realise(t, srv.URL, key.Public, r); err != nil {
					t.Errorf("closure of %s does not substitute after the race: %v\n%s", r, err, stderr)
				}
			}
			checkForeign()
			t.Logf("%d rounds: %d gc runs (--grace %v, one a %v) raced %d pushes and %d copies; the runs removed %d items (%d store paths), spared %d found in use again, left %d pending in all; "+
				"writers waited for a running gc %d times, stored or copied again what it deleted %d times, %d failed without a tag and were run again; "+
				"afterwards %d tags, all complete, %d closures substituted",
				rounds, f.runs, gcRaceGrace, gcRaceInterval, f.pushes, f.copies, f.removed, f.paths, f.spared, f.pending, f.waited, f.restored, f.failed, len(all), len(roots))
			if f.runs < rounds || f.paths == 0 {
				t.Errorf("the race did not happen: %d gc runs removed %d paths", f.runs, f.paths)
			}
		})
	}
}

// TestGCImages: an image made by nixoci image is a root: after its
// closure's tag is removed, gc keeps the paths its layers were made from
// and its layer artifacts, and the image still runs; once the image tag
// is removed too, they go. On a layout and on docker-registry.
func TestGCImages(t *testing.T) {
	fx := testenv.BuildFixture(t, "gc-img")
	for _, g := range gcTargets(t)[:2] {
		t.Run(g.name, func(t *testing.T) {
			g.start(t)
			run(t, "push", "--to", g.ref+":c", fx.App)
			run(t, "image", "--from", g.ref+":c", "--to", g.ref+":img", "--entrypoint", fx.App+"/bin/app", "--link-root", fx.Busybox)
			var layers []string
			for _, tag := range g.tags(t) {
				if strings.Contains(tag, ".layer.") {
					layers = append(layers, tag)
				}
			}
			if len(layers) != len(fx.Closure) {
				t.Fatalf("layer artifact tags %v, want one per path", layers)
			}
			run(t, "rm", g.ref+":c")
			res := gcRun(t, g.ref, "--grace", "0s")
			for _, it := range res.Removed {
				if it.Kind == gc.KindPath || it.Kind == gc.KindLayer {
					t.Errorf("with the image tagged, gc removed %s %s %v", it.Kind, it.StorePath, it.Tags)
				}
			}
			if res.Images != 1 {
				t.Errorf("gc counted %d image roots, want 1", res.Images)
			}
			img := g.layout
			if g.reg != nil {
				img = filepath.Join(t.TempDir(), "fetched")
				testenv.Run(t, "skopeo", "copy", "--src-tls-verify=false", "docker://"+g.ref+":img", "oci:"+img+":img")
			}
			if got := runImage(t, img, "img"); got+"\n" != fx.Message {
				t.Errorf("after gc the image printed %q, want %q", got, fx.Message)
			}
			for _, tag := range layers {
				if !slices.Contains(g.tags(t), tag) {
					t.Errorf("layer artifact %s went", tag)
				}
			}

			run(t, "rm", g.ref+":img")
			res = gcRun(t, g.ref, "--grace", "0s")
			if got, want := res.StorePaths(), fx.Closure; !slices.Equal(got, want) {
				t.Errorf("after the image's rm gc removed paths %v, want %v", got, want)
			}
			var gone []string
			for _, it := range res.Removed {
				if it.Kind == gc.KindLayer {
					gone = append(gone, it.Tags...)
				}
			}
			slices.Sort(gone)
			slices.Sort(layers)
			if !slices.Equal(gone, layers) {
				t.Errorf("removed layer artifacts %v, want %v", gone, layers)
			}
			for _, tag := range g.tags(t) {
				if tag != spec.GCMarkerTag {
					t.Errorf("tag %s left in an otherwise empty repository", tag)
				}
			}
		})
	}
}
