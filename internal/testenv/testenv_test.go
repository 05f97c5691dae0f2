package testenv

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m) }

// fakeTB wraps the real test but records (instead of acting on) Fatal, Error
// and Skip calls. Fatal and Skip end the calling goroutine, as the real ones
// do; run the code under test with runFake.
type fakeTB struct {
	testing.TB
	mu     sync.Mutex
	fatals []string
	errors []string
	skips  []string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) add(to *[]string, s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	*to = append(*to, s)
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.add(&f.fatals, fmt.Sprintf(format, args...))
	runtime.Goexit()
}
func (f *fakeTB) Fatal(args ...any) { f.add(&f.fatals, fmt.Sprint(args...)); runtime.Goexit() }
func (f *fakeTB) FailNow()          { f.add(&f.fatals, "FailNow"); runtime.Goexit() }
func (f *fakeTB) Skipf(format string, args ...any) {
	f.add(&f.skips, fmt.Sprintf(format, args...))
	runtime.Goexit()
}
func (f *fakeTB) Skip(args ...any)                  { f.add(&f.skips, fmt.Sprint(args...)); runtime.Goexit() }
func (f *fakeTB) SkipNow()                          { f.add(&f.skips, "SkipNow"); runtime.Goexit() }
func (f *fakeTB) Errorf(format string, args ...any) { f.add(&f.errors, fmt.Sprintf(format, args...)) }
func (f *fakeTB) Error(args ...any)                 { f.add(&f.errors, fmt.Sprint(args...)) }
func (f *fakeTB) Fail()                             { f.add(&f.errors, "Fail") }
func (f *fakeTB) Failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.fatals)+len(f.errors) > 0
}

// runFake runs fn with a fakeTB on its own goroutine and waits for it.
func runFake(t *testing.T, fn func(tb testing.TB)) *fakeTB {
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f
}

func TestToolFindsPrograms(t *testing.T) {
	sh := Tool(t, "sh")
	if !filepath.IsAbs(sh) || !isExecutable(sh) {
		t.Fatalf("Tool(sh) = %q; want an absolute path to an executable", sh)
	}

	// A program only in $HOME/go/bin (where `go install` puts oras).
	home := t.TempDir()
	bin := filepath.Join(home, "go", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	prog := filepath.Join(bin, "testenv-only-in-home-go-bin")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\necho found\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// GOPATH set keeps findTool from running `go env GOPATH` with the
	// temporary HOME: the go command may leave a telemetry process writing
	// there after the test, and the directory could not be removed.
	t.Setenv("GOPATH", t.TempDir())
	t.Setenv("HOME", home)
	if got := Tool(t, "testenv-only-in-home-go-bin"); got != prog {
		t.Errorf("Tool found %q; want %q (from $HOME/go/bin)", got, prog)
	}

	// And one only in $GOPATH/bin.
	gopath := t.TempDir()
	if err := os.MkdirAll(filepath.Join(gopath, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	prog2 := filepath.Join(gopath, "bin", "testenv-only-in-gopath-bin")
	if err := os.WriteFile(prog2, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOPATH", gopath)
	if got := Tool(t, "testenv-only-in-gopath-bin"); got != prog2 {
		t.Errorf("Tool found %q; want %q (from $GOPATH/bin)", got, prog2)
	}
}

func TestToolMissingSkipsOrFails(t *testing.T) {
	const name = "testenv-no-such-program-anywhere"
	t.Setenv(RequireToolsEnv, "")
	f := runFake(t, func(tb testing.TB) { Tool(tb, name); tb.Errorf("Tool returned for a missing program") })
	if len(f.skips) != 1 || len(f.fatals) != 0 || len(f.errors) != 0 {
		t.Fatalf("missing tool without %s: skips=%q fatals=%q errors=%q; want one skip", RequireToolsEnv, f.skips, f.fatals, f.errors)
	}
	if !strings.Contains(f.skips[0], name) || !strings.Contains(f.skips[0], RequireToolsEnv) {
		t.Errorf("skip message %q should name the tool and %s", f.skips[0], RequireToolsEnv)
	}

	t.Setenv(RequireToolsEnv, "1")
	f = runFake(t, func(tb testing.TB) { Tool(tb, name); tb.Errorf("Tool returned for a missing program") })
	if len(f.fatals) != 1 || len(f.skips) != 0 || len(f.errors) != 0 {
		t.Fatalf("missing tool with %s=1: skips=%q fatals=%q errors=%q; want one fatal", RequireToolsEnv, f.skips, f.fatals, f.errors)
	}
	if !strings.Contains(f.fatals[0], name) {
		t.Errorf("fatal message %q should name the tool", f.fatals[0])
	}
}

func TestNixEnv(t *testing.T) {
	count := func(env []string) (n int, val string) {
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, "NIX_CONFIG="); ok {
				n++
				val = v
			}
		}
		return n, val
	}
	t.Setenv("NIX_CONFIG", "")
	n, v := count(NixEnv())
	if n != 1 || v != nixConfig {
		t.Errorf("NixEnv without NIX_CONFIG: %d entries, last %q", n, v)
	}
	t.Setenv("NIX_CONFIG", "connect-timeout = 3")
	n, v = count(NixEnv())
	if n != 1 || v != nixConfig+"\nconnect-timeout = 3" {
		t.Errorf("NixEnv with NIX_CONFIG set: %d entries, last %q", n, v)
	}
	// And nix takes all of it, the settings already set included.
	out := Run(t, "nix", "show-config")
	for _, want := range []string{"experimental-features = nix-command", "build-users-group = \n", "substituters = \n", "connect-timeout = 3"} {
		if !strings.Contains(out+"\n", want) {
			t.Errorf("nix show-config under NixEnv lacks %q:\n%s", want, out)
		}
	}
}

func TestRun(t *testing.T) {
	if got := Run(t, "sh", "-c", "echo '  hi  '; echo to-stderr >&2"); got != "hi" {
		t.Errorf("Run = %q; want %q", got, "hi")
	}
	if got := Run(t, "sh", "-c", `printf %s "$NIX_CONFIG"`); !strings.Contains(got, "nix-command") {
		t.Errorf("Run did not use NixEnv: NIX_CONFIG = %q", got)
	}

	stdout, stderr, err := RunErr(t, "sh", "-c", "echo out; echo oops >&2; exit 3")
	if err == nil {
		t.Fatal("RunErr of a failing command returned no error")
	}
	if stdout != "out" || stderr != "oops\n" {
		t.Errorf("RunErr = (%q, %q); want (\"out\", \"oops\\n\")", stdout, stderr)
	}
	for _, want := range []string{"sh -c 'echo out; echo oops >&2; exit 3'", "exit status 3", "oops"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("RunErr error %q does not contain %q", err, want)
		}
	}
	var ee *exec.ExitError
	if !errorsAs(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("RunErr error does not unwrap to an *exec.ExitError with code 3: %#v", err)
	}

	f := runFake(t, func(tb testing.TB) { Run(tb, "sh", "-c", "echo broken-thing >&2; exit 7") })
	if len(f.fatals) != 1 || !strings.Contains(f.fatals[0], "broken-thing") || !strings.Contains(f.fatals[0], "exit status 7") {
		t.Errorf("Run of a failing command: fatals = %q; want one naming stderr and the exit status", f.fatals)
	}
}

func errorsAs(err error, target **exec.ExitError) bool {
	for err != nil {
		if e, ok := err.(*exec.ExitError); ok {
			*target = e
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

func TestBuildFixture(t *testing.T) {
	// A salt new to this machine, so that a real build happens every run.
	salt := "run" + strconv.FormatInt(time.Now().UnixNano(), 36)
	f := BuildFixture(t, salt)

	for _, p := range []string{f.App, f.Busybox, f.Data} {
		if !strings.HasPrefix(p, "/nix/store/") {
			t.Errorf("fixture path %q is not in /nix/store", p)
		}
	}
	if !strings.HasSuffix(f.App, "-fx-app-"+salt) || !strings.HasSuffix(f.Data, "-fx-data-"+salt) || !strings.HasSuffix(f.Busybox, "-fx-busybox") {
		t.Errorf("fixture names: %+v", f)
	}
	if f.Message != "hello from "+salt+"\n" {
		t.Errorf("Message = %q", f.Message)
	}

	// App runs, with the store's busybox as its interpreter.
	out, err := exec.Command(f.App + "/bin/app").Output()
	if err != nil {
		t.Fatalf("running %s/bin/app: %v", f.App, err)
	}
	if string(out) != f.Message {
		t.Errorf("%s/bin/app printed %q; want %q", f.App, out, f.Message)
	}
	script, err := os.ReadFile(f.App + "/bin/app")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(script), "#!"+f.Busybox+"/bin/sh\n") {
		t.Errorf("app script does not start with #!%s/bin/sh:\n%s", f.Busybox, script)
	}

	// The closure is exactly the three paths, as Nix sees it.
	want := strings.Fields(Run(t, "nix-store", "-qR", f.App))
	slices.Sort(want)
	if !slices.Equal(f.Closure, want) || !slices.IsSorted(f.Closure) {
		t.Errorf("Closure = %q; nix-store -qR says %q", f.Closure, want)
	}

	// Data has every NAR node type.
	types := map[string]func(os.FileMode) bool{
		"share/msg":              func(m os.FileMode) bool { return m.IsRegular() && m.Perm()&0o111 == 0 },
		"share/empty":            func(m os.FileMode) bool { return m.IsRegular() },
		"share/link":             func(m os.FileMode) bool { return m&os.ModeSymlink != 0 },
		"share/nested/deeper":    func(m os.FileMode) bool { return m.IsDir() },
		"share/nested/emptydir":  func(m os.FileMode) bool { return m.IsDir() },
		"bin/tool":               func(m os.FileMode) bool { return m.IsRegular() && m.Perm()&0o111 != 0 },
		"share/nested/deeper/..": func(m os.FileMode) bool { return m.IsDir() },
	}
	for rel, ok := range types {
		fi, err := os.Lstat(filepath.Join(f.Data, rel))
		if err != nil || !ok(fi.Mode()) {
			t.Errorf("Data/%s: %v, mode %v", rel, err, fi.Mode())
		}
	}
	if msg, err := os.ReadFile(f.Data + "/share/link"); err != nil || string(msg) != f.Message {
		t.Errorf("Data/share/link reads %q, %v", msg, err)
	}

	// Same salt, same paths.
	if again := BuildFixture(t, salt); !equalFixtures(again, f) {
		t.Errorf("building salt %q twice gave\n%+v\nthen\n%+v", salt, f, again)
	}

	// Another salt: different App and Data, the same Busybox.
	g := BuildFixture(t, salt+"-other")
	if g.Busybox != f.Busybox || g.App == f.App || g.Data == f.Data {
		t.Errorf("fixtures with salts %q and %q: want only Busybox shared\n%+v\n%+v", salt, salt+"-other", f, g)
	}

	// A bad salt is refused with a clear message.
	bad := runFake(t, func(tb testing.TB) { BuildFixture(tb, "no spaces") })
	if len(bad.fatals) != 1 || !strings.Contains(bad.fatals[0], "salt") {
		t.Errorf("BuildFixture with a bad salt: fatals = %q", bad.fatals)
	}
}

func equalFixtures(a, b Fixture) bool {
	return a.App == b.App && a.Busybox == b.Busybox && a.Data == b.Data && a.Message == b.Message && slices.Equal(a.Closure, b.Closure)
}

func TestBuildDerivation(t *testing.T) {
	f := BuildFixture(t, "testenv-drv")
	// Characters that need escaping in a Nix string, in a shell script.
	script := `mkdir -p $out/bin
printf '%s\n' 'q"uote' 'back\slash' 'dollar${brace}' 'two$$' 'tab	x' > $out/odd
echo "$ref0" > $out/ref
printf '%s' "$refs" > $out/refs
printf '#!%s/bin/sh\necho built\n' "$ref1" > $out/bin/run
chmod +x $out/bin/run
`
	out := BuildDerivation(t, "testenv-drv-out", script, f.Data, f.Busybox)
	if !strings.HasPrefix(out, "/nix/store/") || !strings.HasSuffix(out, "-testenv-drv-out") {
		t.Fatalf("BuildDerivation returned %q", out)
	}
	odd, err := os.ReadFile(out + "/odd")
	if err != nil {
		t.Fatal(err)
	}
	if want := "q\"uote\nback\\slash\ndollar${brace}\ntwo$$\ntab\tx\n"; string(odd) != want {
		t.Errorf("script text was altered on its way through Nix: got %q, want %q", odd, want)
	}
	if ref, _ := os.ReadFile(out + "/ref"); string(ref) != f.Data+"\n" {
		t.Errorf("$ref0 = %q; want %q", ref, f.Data)
	}
	if refs, _ := os.ReadFile(out + "/refs"); string(refs) != f.Data+" "+f.Busybox {
		t.Errorf("$refs = %q", refs)
	}
	if got := Run(t, out+"/bin/run"); got != "built" {
		t.Errorf("%s/bin/run printed %q", out, got)
	}
	refs := strings.Fields(Run(t, "nix-store", "-q", "--references", out))
	slices.Sort(refs)
	want := []string{f.Busybox, f.Data}
	slices.Sort(want)
	if !slices.Equal(refs, want) {
		t.Errorf("references of %s = %q; want %q", out, refs, want)
	}

	// No refs at all works too, and the result has no references.
	plain := BuildDerivation(t, "testenv-drv-plain", "echo plain > $out")
	if got := Run(t, "nix-store", "-q", "--references", plain); got != "" {
		t.Errorf("references of %s = %q; want none", plain, got)
	}

	// A failing build fails the test with Nix's log.
	bad := runFake(t, func(tb testing.TB) {
		BuildDerivation(tb, "testenv-drv-fails", "echo the-build-broke >&2; exit 1")
	})
	if len(bad.fatals) != 1 || !strings.Contains(bad.fatals[0], "the-build-broke") {
		t.Errorf("failing BuildDerivation: fatals = %q; want one with the builder's stderr", bad.fatals)
	}
}

func TestNixString(t *testing.T) {
	cases := []string{"", "plain", `a"b`, `back\slash`, "${x}", "$${x}", "$", "end$", "$$", `\${`, "$\\{", "new\nline\ttab\rcr", "ünïcode"}
	var b strings.Builder
	b.WriteString("[")
	for _, c := range cases {
		b.WriteString(" " + nixString(c))
	}
	b.WriteString(" ]")
	file := filepath.Join(t.TempDir(), "strings.nix")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := Run(t, "nix-instantiate", "--eval", "--strict", "--json", file)
	var got []string
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("nix-instantiate printed %q: %v", out, err)
	}
	if !slices.Equal(got, cases) {
		t.Errorf("Nix read back %q; want %q", got, cases)
	}
}

func TestGenerateKey(t *testing.T) {
	k := GenerateKey(t, "testenv-key-1")
	if k.Name != "testenv-key-1" {
		t.Errorf("Name = %q", k.Name)
	}
	sec, err := os.ReadFile(k.SecretFile)
	if err != nil || !strings.HasPrefix(string(sec), "testenv-key-1:") {
		t.Errorf("secret file %s: %q, %v", k.SecretFile, sec, err)
	}
	pub, err := os.ReadFile(k.PublicFile)
	if err != nil || strings.TrimSpace(string(pub)) != k.Public || !strings.HasPrefix(k.Public, "testenv-key-1:") {
		t.Errorf("public file %s: %q, %v; Public = %q", k.PublicFile, pub, err, k.Public)
	}
	if other := GenerateKey(t, "testenv-key-1"); other.Public == k.Public {
		t.Errorf("two generated keys are the same: %q", k.Public)
	}
}

func TestNixCopyFrom(t *testing.T) {
	f := BuildFixture(t, "testenv-copy")
	key := GenerateKey(t, "testenv-copy-key")
	cache := t.TempDir()
	cacheURL := "file://" + cache
	Run(t, "nix", "copy", "--to", cacheURL+"?secret-key="+key.SecretFile, f.App)

	// The right key: the whole closure lands in the new store, intact.
	store := NewStoreDir(t)
	if ents, _ := os.ReadDir(store); len(ents) != 0 {
		t.Fatalf("NewStoreDir %s is not empty", store)
	}
	out, err := NixCopyFrom(t, cacheURL, store, key.Public, f.App)
	if err != nil {
		t.Fatalf("NixCopyFrom with the signing key trusted: %v", err)
	}
	for _, p := range f.Closure {
		TreesEqual(t, p, filepath.Join(store, p))
	}
	if got := Run(t, "nix", "path-info", "--store", store, "-r", f.App); !sameFields(got, f.Closure) {
		t.Errorf("nix path-info -r in the new store: %q; want %q (copy output: %s)", got, f.Closure, out)
	}

	// A key that did not sign: refused.
	wrong := GenerateKey(t, "testenv-copy-key")
	store2 := NewStoreDir(t)
	out, err = NixCopyFrom(t, cacheURL, store2, wrong.Public, f.App)
	if err == nil {
		t.Fatalf("NixCopyFrom trusting the wrong key succeeded:\n%s", out)
	}
	if !strings.Contains(out, "lacks a valid signature") || !strings.Contains(err.Error(), "lacks a valid signature") {
		t.Errorf("NixCopyFrom with the wrong key failed, but not for the signature:\noutput: %s\nerror: %v", out, err)
	}
	if _, err := os.Lstat(filepath.Join(store2, f.App)); err == nil {
		t.Errorf("%s landed in %s despite the refused signature", f.App, store2)
	}
}

func sameFields(s string, want []string) bool {
	got := strings.Fields(s)
	slices.Sort(got)
	return slices.Equal(got, want)
}

// makeTree writes a small tree with every node type under dir.
func makeTree(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755))
	must(os.MkdirAll(filepath.Join(dir, "empty"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "msg"), []byte("hello\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "a", "b", "big"), bytes.Repeat([]byte("0123456789"), 20000), 0o644))
	must(os.WriteFile(filepath.Join(dir, "run"), []byte("#!/bin/sh\n"), 0o755))
	must(os.Symlink("msg", filepath.Join(dir, "link")))
	must(os.Symlink("a/b", filepath.Join(dir, "dirlink")))
}

func TestDiffTrees(t *testing.T) {
	want := t.TempDir()
	makeTree(t, want)
	fresh := func() string {
		d := t.TempDir()
		makeTree(t, d)
		if err := DiffTrees(want, d); err != nil {
			t.Fatalf("identical trees reported different: %v", err)
		}
		return d
	}
	fresh()
	TreesEqual(t, want, fresh())

	cases := []struct {
		name   string
		change func(dir string) error
		want   []string
	}{
		{"changed byte", func(d string) error { return os.WriteFile(filepath.Join(d, "msg"), []byte("hellO\n"), 0o644) },
			[]string{"msg", "contents differ at byte 4"}},
		{"changed byte deep in a big file", func(d string) error {
			p := filepath.Join(d, "a", "b", "big")
			data, _ := os.ReadFile(p)
			data[150001] = 'x'
			return os.WriteFile(p, data, 0o644)
		}, []string{filepath.Join("a", "b", "big"), "byte 150001"}},
		{"longer file", func(d string) error { return os.WriteFile(filepath.Join(d, "msg"), []byte("hello\nmore"), 0o644) },
			[]string{"msg", "length", "want 6 bytes, got 10 bytes"}},
		{"exec bit", func(d string) error { return os.Chmod(filepath.Join(d, "run"), 0o644) },
			[]string{"run", "executable"}},
		{"exec bit added", func(d string) error { return os.Chmod(filepath.Join(d, "msg"), 0o744) },
			[]string{"msg", "executable"}},
		{"symlink target", func(d string) error {
			os.Remove(filepath.Join(d, "link"))
			return os.Symlink("./msg", filepath.Join(d, "link"))
		}, []string{"link", "symlink target", `"./msg"`}},
		{"missing file", func(d string) error { return os.Remove(filepath.Join(d, "msg")) },
			[]string{"msg", "missing"}},
		{"extra file", func(d string) error { return os.WriteFile(filepath.Join(d, "a", "new"), nil, 0o644) },
			[]string{filepath.Join("a", "new"), "unexpected"}},
		{"empty dir removed", func(d string) error { return os.Remove(filepath.Join(d, "empty")) },
			[]string{"empty", "missing"}},
		{"symlink replaced by file", func(d string) error {
			os.Remove(filepath.Join(d, "dirlink"))
			return os.WriteFile(filepath.Join(d, "dirlink"), []byte("a/b"), 0o644)
		}, []string{"dirlink", "type differs", "symlink", "regular file"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := fresh()
			if err := c.change(got); err != nil {
				t.Fatal(err)
			}
			err := DiffTrees(want, got)
			if err == nil {
				t.Fatalf("DiffTrees did not see the change")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("DiffTrees error %q does not mention %q", err, w)
				}
			}
			f := runFake(t, func(tb testing.TB) { TreesEqual(tb, want, got) })
			if len(f.fatals) != 1 || !strings.Contains(f.fatals[0], err.Error()) {
				t.Errorf("TreesEqual: fatals = %q; want one carrying %q", f.fatals, err)
			}
		})
	}

	// Mode bits other than x, and times, do not matter (a NAR has neither).
	got := fresh()
	if err := os.Chmod(filepath.Join(got, "msg"), 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(got, "run"), time.Unix(1, 0), time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	if err := DiffTrees(want, got); err != nil {
		t.Errorf("DiffTrees cares about non-x mode bits or times: %v", err)
	}
	// A missing root is reported, not a panic.
	if err := DiffTrees(want, filepath.Join(got, "nope")); err == nil || !strings.Contains(err.Error(), "got side") {
		t.Errorf("DiffTrees with a missing root: %v", err)
	}
}

func TestFreePort(t *testing.T) {
	p := FreePort(t)
	if p <= 0 || p > 65535 {
		t.Fatalf("FreePort = %d", p)
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
	if err != nil {
		t.Fatalf("port %d from FreePort cannot be bound: %v", p, err)
	}
	l.Close()
}

// TestStartRegistryRetriesTakenPort: when the port FreePort found is
// taken before the registry binds it, StartRegistry tries another.
func TestStartRegistryRetriesTakenPort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port
	var offered []int
	r := startRegistry(t, RegistryOptions{}, func() int {
		p := FreePort(t)
		if len(offered) == 0 {
			p = takenPort
		}
		offered = append(offered, p)
		return p
	})
	if len(offered) != 2 || r.Addr != fmt.Sprintf("127.0.0.1:%d", offered[1]) {
		t.Errorf("ports offered %v, registry on %s; want the taken port %d, then another it runs on", offered, r.Addr, takenPort)
	}
	if status, _ := httpStatus(t, "GET", r.URL()+"/v2/", "", "", nil); status != http.StatusOK {
		t.Errorf("GET /v2/ after the retry: %d", status)
	}
	if log, _ := os.ReadFile(r.LogFile); !BindFailed(string(log)) {
		t.Errorf("the first start did not fail binding %d; log:\n%s", takenPort, log)
	}
}

// TestStartOnFreePortGivesUp: other errors, or only taken ports, fail the
// test instead of looping.
func TestStartOnFreePortGivesUp(t *testing.T) {
	tries := 0
	f := runFake(t, func(tb testing.TB) {
		StartOnFreePort(tb, func(string) error { tries++; return fmt.Errorf("bind: %w", ErrAddrInUse) })
	})
	if len(f.fatals) != 1 || tries != startAttempts {
		t.Errorf("always taken: %d tries, fatals %q; want %d tries and one fatal", tries, f.fatals, startAttempts)
	}
	tries = 0
	f = runFake(t, func(tb testing.TB) {
		StartOnFreePort(tb, func(string) error { tries++; return errors.New("config is broken") })
	})
	if len(f.fatals) != 1 || !strings.Contains(f.fatals[0], "config is broken") || tries != 1 {
		t.Errorf("another error: %d tries, fatals %q; want one try and a fatal naming it", tries, f.fatals)
	}
}

func TestWaitHTTP(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 4 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusTeapot)
	}))
	defer srv.Close()
	WaitHTTP(t, srv.URL, 10*time.Second, http.StatusTeapot)
	if n := calls.Load(); n != 4 {
		t.Errorf("WaitHTTP returned after %d requests; want 4 (3 unready answers, then ready)", n)
	}

	start := time.Now()
	f := runFake(t, func(tb testing.TB) { WaitHTTP(tb, srv.URL, 300*time.Millisecond, http.StatusOK) })
	if len(f.fatals) != 1 || !strings.Contains(f.fatals[0], "418") || !strings.Contains(f.fatals[0], srv.URL) {
		t.Errorf("WaitHTTP on a wrong status: fatals = %q", f.fatals)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 5*time.Second {
		t.Errorf("WaitHTTP gave up after %v; want about 300ms", d)
	}

	// Nothing listening: the deadline ends it, naming the connection error.
	url := fmt.Sprintf("http://127.0.0.1:%d/", FreePort(t))
	f = runFake(t, func(tb testing.TB) { WaitHTTP(tb, url, 200*time.Millisecond) })
	if len(f.fatals) != 1 || !strings.Contains(f.fatals[0], "refused") {
		t.Errorf("WaitHTTP on a closed port: fatals = %q", f.fatals)
	}
}

func httpStatus(t *testing.T, method, u, user, pass string, body []byte) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// pushBlob uploads a blob with the distribution HTTP API (POST, then PUT).
func pushBlob(t *testing.T, r *Registry, repo string, blob []byte) string {
	t.Helper()
	sum := sha256.Sum256(blob)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	status, hdr := httpStatus(t, "POST", r.URL()+"/v2/"+repo+"/blobs/uploads/", r.User, r.Password, nil)
	if status != http.StatusAccepted {
		t.Fatalf("starting a blob upload: status %d", status)
	}
	loc, err := url.Parse(hdr.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	base, _ := url.Parse(r.URL())
	loc = base.ResolveReference(loc)
	q := loc.Query()
	q.Set("digest", digest)
	loc.RawQuery = q.Encode()
	if status, _ := httpStatus(t, "PUT", loc.String(), r.User, r.Password, blob); status != http.StatusCreated {
		t.Fatalf("finishing a blob upload: status %d", status)
	}
	return digest
}

func TestRegistry(t *testing.T) {
	r := StartRegistry(t, RegistryOptions{})
	if !strings.HasPrefix(r.Addr, "127.0.0.1:") || r.Ref("a/b") != r.Addr+"/a/b" {
		t.Errorf("Addr %q, Ref %q", r.Addr, r.Ref("a/b"))
	}
	if status, _ := httpStatus(t, "GET", r.URL()+"/v2/", "", "", nil); status != http.StatusOK {
		t.Fatalf("GET /v2/ without auth configured: %d; want 200", status)
	}
	digest := pushBlob(t, r, "testenv/blob", []byte("persist me"))
	blobURL := r.URL() + "/v2/testenv/blob/blobs/" + digest
	if status, _ := httpStatus(t, "HEAD", blobURL, "", "", nil); status != http.StatusOK {
		t.Fatalf("HEAD of the pushed blob: %d", status)
	}
	if _, err := os.Stat(filepath.Join(r.Dir, "docker", "registry", "v2")); err != nil {
		t.Errorf("storage root %s does not hold the registry's data: %v", r.Dir, err)
	}

	r.Stop()
	if resp, err := http.Get(r.URL() + "/v2/"); err == nil {
		resp.Body.Close()
		t.Fatalf("GET /v2/ after Stop answered %s", resp.Status)
	}
	r.Stop() // a second Stop is a no-op

	r.Start()
	if status, _ := httpStatus(t, "HEAD", blobURL, "", "", nil); status != http.StatusOK {
		t.Fatalf("HEAD of the blob after a restart: %d; want 200 (storage kept)", status)
	}
	if log, err := os.ReadFile(r.LogFile); err != nil || !strings.Contains(string(log), "start #2") {
		t.Errorf("log file %s: %v\n%s", r.LogFile, err, log)
	}
	if strings.Contains(r.logTail(), "level=error") {
		t.Errorf("the registry logged errors:\n%s", r.logTail())
	}
}

func TestRegistryAuth(t *testing.T) {
	r := StartRegistry(t, RegistryOptions{User: "alice", Password: "s3cret pw"})
	if status, hdr := httpStatus(t, "GET", r.URL()+"/v2/", "", "", nil); status != http.StatusUnauthorized || !strings.Contains(hdr.Get("WWW-Authenticate"), "Basic") {
		t.Fatalf("GET /v2/ without credentials: %d %q; want 401 with a Basic challenge", status, hdr.Get("WWW-Authenticate"))
	}
	if status, _ := httpStatus(t, "GET", r.URL()+"/v2/", "alice", "s3cret pw", nil); status != http.StatusOK {
		t.Fatalf("GET /v2/ with the right credentials: %d; want 200", status)
	}
	if status, _ := httpStatus(t, "GET", r.URL()+"/v2/", "alice", "wrong", nil); status != http.StatusUnauthorized {
		t.Fatalf("GET /v2/ with a wrong password: %d; want 401", status)
	}

	// The real oras, with credentials from DockerConfig.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	push := func(dockerConfig string) (string, string, error) {
		cmd := Cmd(t, "oras", "push", "--plain-http", r.Ref("testenv/art:v1"), "hello.txt:text/plain")
		cmd.Dir = dir
		cmd.Env = append(cmd.Env, "DOCKER_CONFIG="+dockerConfig)
		return RunCmdErr(cmd)
	}
	if _, _, err := push(DockerConfig(t, r.Addr, "alice", "wrong")); err == nil {
		t.Fatal("oras push with a wrong password succeeded")
	}
	cfgDir := DockerConfig(t, r.Addr, "alice", "s3cret pw")
	if _, err := os.Stat(filepath.Join(cfgDir, "config.json")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := push(cfgDir); err != nil {
		t.Fatalf("oras push with DockerConfig credentials: %v", err)
	}
	cmd := Cmd(t, "oras", "repo", "tags", "--plain-http", r.Ref("testenv/art"))
	cmd.Env = append(cmd.Env, "DOCKER_CONFIG="+cfgDir)
	if tags := RunCmd(t, cmd); tags != "v1" {
		t.Errorf("oras repo tags = %q; want v1", tags)
	}

	// Restart keeps auth and content.
	r.Stop()
	r.Start()
	if status, _ := httpStatus(t, "GET", r.URL()+"/v2/", "", "", nil); status != http.StatusUnauthorized {
		t.Fatalf("GET /v2/ without credentials after restart: %d; want 401", status)
	}
	pulled := t.TempDir()
	cmd = Cmd(t, "oras", "pull", "--plain-http", "-o", pulled, r.Ref("testenv/art:v1"))
	cmd.Env = append(cmd.Env, "DOCKER_CONFIG="+cfgDir)
	RunCmd(t, cmd)
	if got, err := os.ReadFile(filepath.Join(pulled, "hello.txt")); err != nil || string(got) != "hi\n" {
		t.Errorf("oras pull after restart: hello.txt = %q, %v; want \"hi\\n\"", got, err)
	}
}

func TestRegistryStartFailsWhenPortTaken(t *testing.T) {
	r := StartRegistry(t, RegistryOptions{})
	r.Stop()
	l, err := net.Listen("tcp", r.Addr)
	if err != nil {
		t.Fatalf("taking %s: %v", r.Addr, err)
	}
	defer l.Close()
	f := runFake(t, func(tb testing.TB) {
		r.t = tb
		r.Start()
	})
	r.t = t
	if len(f.fatals) != 1 || !strings.Contains(f.fatals[0], "address already in use") {
		t.Errorf("Start on a taken port: fatals = %q; want one quoting the registry's bind error", f.fatals)
	}
}

func TestDockerConfig(t *testing.T) {
	dir := DockerConfig(t, "127.0.0.1:5000", "bob", "p:w")
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Auths map[string]struct{ Auth string } `json:"auths"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("config.json: %v\n%s", err, data)
	}
	if got := cfg.Auths["127.0.0.1:5000"].Auth; got != "Ym9iOnA6dw==" {
		t.Errorf("auth = %q; want base64(bob:p:w)", got)
	}
}

func TestBuildBinary(t *testing.T) {
	p := BuildBinary(t, "./testdata/hello")
	if got := Run(t, p, "a", "b"); got != "hello a b" {
		t.Errorf("%s printed %q", p, got)
	}
	if again := BuildBinary(t, "./testdata/hello"); again != p {
		t.Errorf("second BuildBinary built again: %q, then %q", p, again)
	}
	abs, _ := filepath.Abs("testdata/hello")
	if same := BuildBinary(t, abs); same != p {
		t.Errorf("the absolute directory gave another binary: %q vs %q", same, p)
	}

	// An import path, resolved in this module.
	q := BuildBinary(t, "github.com/nixoci/nixoci/internal/testenv/testdata/hello")
	if got := Run(t, q, "c"); got != "hello c" {
		t.Errorf("%s printed %q", q, got)
	}

	// A compile error fails the test with the compiler's output, every time.
	broken := t.TempDir()
	if err := os.WriteFile(filepath.Join(broken, "go.mod"), []byte("module example.com/broken\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(broken, "main.go"), []byte("package main\n\nfunc main() { undefinedThing() }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		f := runFake(t, func(tb testing.TB) { BuildBinary(tb, broken) })
		if len(f.fatals) != 1 || !strings.Contains(f.fatals[0], "undefined: undefinedThing") {
			t.Errorf("BuildBinary of a broken package (call %d): fatals = %q", i+1, f.fatals)
		}
	}
}

func TestCleanupBinaries(t *testing.T) {
	p := BuildBinary(t, "./testdata/hello")
	CleanupBinaries()
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("%s still there after CleanupBinaries: %v", p, err)
	}
	q := BuildBinary(t, "./testdata/hello")
	if _, err := os.Stat(q); err != nil {
		t.Errorf("BuildBinary after CleanupBinaries: %v", err)
	}
}
