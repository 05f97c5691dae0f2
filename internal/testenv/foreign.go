package testenv

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// ForeignFixture is a closure built for another system, as a builder of
// that system would serve it: a file:// binary cache whose narinfos say
// System. Its busybox is Debian's real busybox-static for that
// architecture, so images of it hold a real foreign binary.
type ForeignFixture struct {
	// CacheDir is the binary cache (nix-cache-info, narinfos, nar/*.nar.xz).
	CacheDir string
	// System is the Nix system the narinfos record, e.g. aarch64-linux.
	System string
	// App is /nix/store/…-fx-app-<system>-<salt>: bin/app, a
	// "#!<Busybox>/bin/sh" script running `<Busybox>/bin/busybox cat
	// <App>/share/msg`, and share/msg holding Message.
	App string
	// Busybox is /nix/store/…-fx-busybox-<system>: bin/busybox (Debian's
	// static busybox for the architecture) and bin/sh -> busybox.
	Busybox string
	// Closure is App and Busybox, sorted.
	Closure []string
	// Message is what App's bin/app prints: "hello from <system> <salt>\n".
	Message string
}

// foreignSystems maps the Debian architectures BuildForeignCache knows
// to Nix systems and ELF machines.
var foreignSystems = map[string]struct {
	system  string
	machine elf.Machine
}{
	"arm64": {"aarch64-linux", elf.EM_AARCH64},
}

// BuildForeignCache writes a ForeignFixture for the Debian architecture
// debArch (arm64) into t.TempDir(): the trees are dumped into NARs by the
// real `nix-store --dump`, compressed by xz as Nix does, described by
// narinfos with System set and no signature, and the real Nix reads the
// cache back (`nix path-info --store file://…`) before it is returned.
// salt (as for BuildFixture) makes distinct App paths; Busybox is the
// same for every salt.
func BuildForeignCache(t testing.TB, debArch, salt string) ForeignFixture {
	t.Helper()
	arch, ok := foreignSystems[debArch]
	if !ok {
		t.Fatalf("BuildForeignCache: unknown architecture %q", debArch)
	}
	if err := checkName(salt); err != nil {
		t.Fatalf("BuildForeignCache: bad salt %q: %v", salt, err)
	}
	busybox := ForeignBusybox(t, debArch)
	tmp := t.TempDir()
	f := ForeignFixture{CacheDir: filepath.Join(tmp, "cache"), System: arch.system,
		Message: fmt.Sprintf("hello from %s %s\n", arch.system, salt)}
	f.Busybox = foreignStorePath("fx-busybox-" + arch.system)
	f.App = foreignStorePath("fx-app-" + arch.system + "-" + salt)
	f.Closure = []string{f.App, f.Busybox}
	slices.Sort(f.Closure)

	bbTree := filepath.Join(tmp, "busybox")
	mustMkdir(t, filepath.Join(bbTree, "bin"))
	data, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(bbTree, "bin", "busybox"), string(data), 0o555)
	if err := os.Symlink("busybox", filepath.Join(bbTree, "bin", "sh")); err != nil {
		t.Fatal(err)
	}
	appTree := filepath.Join(tmp, "app")
	mustMkdir(t, filepath.Join(appTree, "bin"))
	mustMkdir(t, filepath.Join(appTree, "share"))
	mustWrite(t, filepath.Join(appTree, "bin", "app"), fmt.Sprintf("#!%s/bin/sh\nexec %s/bin/busybox cat %s/share/msg\n", f.Busybox, f.Busybox, f.App), 0o555)
	mustWrite(t, filepath.Join(appTree, "share", "msg"), f.Message, 0o444)

	mustMkdir(t, filepath.Join(f.CacheDir, "nar"))
	mustWrite(t, filepath.Join(f.CacheDir, "nix-cache-info"), "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n", 0o644)
	writeForeignPath(t, f.CacheDir, f.Busybox, bbTree, f.System)
	writeForeignPath(t, f.CacheDir, f.App, appTree, f.System, f.App, f.Busybox)

	out := Run(t, "nix", "path-info", "--store", "file://"+f.CacheDir, "-r", f.App)
	if got := strings.Fields(out); !slices.Equal(slices.Sorted(slices.Values(got)), f.Closure) {
		t.Fatalf("BuildForeignCache: nix path-info -r %s in the cache printed %q, want %v", f.App, out, f.Closure)
	}
	return f
}

// foreignStorePath is a store path for name with a hash part made from
// it (the trees are not built by Nix, so no derivation gives one).
func foreignStorePath(name string) string {
	sum := sha256.Sum256([]byte("nixoci foreign fixture " + name))
	return "/nix/store/" + nixbase32.EncodeToString(sum[:20]) + "-" + name
}

// writeForeignPath adds storePath, whose content is tree, to the cache.
func writeForeignPath(t testing.TB, cacheDir, storePath, tree, system string, refs ...string) {
	t.Helper()
	nar := runOutput(t, "nix-store", "--dump", tree)
	narFile := filepath.Join(t.TempDir(), "nar")
	mustWrite(t, narFile, string(nar), 0o644)
	xz := runOutput(t, "xz", "-c", "-6", narFile)
	fileHash, narHash := nix32sha256(xz), nix32sha256(nar)
	url := "nar/" + fileHash + ".nar.xz"
	mustWrite(t, filepath.Join(cacheDir, url), string(xz), 0o644)
	var bases []string
	for _, r := range refs {
		bases = append(bases, filepath.Base(r))
	}
	slices.Sort(bases)
	info := fmt.Sprintf("StorePath: %s\nURL: %s\nCompression: xz\nFileHash: sha256:%s\nFileSize: %d\nNarHash: sha256:%s\nNarSize: %d\nReferences: %s\nSystem: %s\n",
		storePath, url, fileHash, len(xz), narHash, len(nar), strings.Join(bases, " "), system)
	hashPart, _, _ := strings.Cut(filepath.Base(storePath), "-")
	mustWrite(t, filepath.Join(cacheDir, hashPart+".narinfo"), info, 0o644)
}

// runOutput runs a command (as Run) and returns its stdout unchanged.
func runOutput(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	cmd := Cmd(t, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", CommandLine(cmd.Args), err, stderr.String())
	}
	return out
}

func nix32sha256(data []byte) string {
	sum := sha256.Sum256(data)
	return nixbase32.EncodeToString(sum[:])
}

// foreignBusyboxes holds the busybox binaries ForeignBusybox unpacked in
// this process, by architecture.
var foreignBusyboxes struct {
	mu    sync.Mutex
	paths map[string]string
}

// ForeignBusybox is Debian's static busybox for debArch (e.g. arm64):
// downloaded with `apt-get download busybox-static:ARCH` and unpacked
// with `dpkg-deb -x` once per test process, into the directory
// CleanupBinaries removes. It needs the architecture added to dpkg and
// its package lists (`dpkg --add-architecture arm64 && apt-get update`,
// as .ci/run does); without them the test is skipped (or fails under
// NIXOCI_REQUIRE_TOOLS=1). The binary is checked to be an ELF for that
// architecture.
func ForeignBusybox(t testing.TB, debArch string) string {
	t.Helper()
	arch, ok := foreignSystems[debArch]
	if !ok {
		t.Fatalf("ForeignBusybox: unknown architecture %q", debArch)
	}
	aptGet, dpkgDeb := Tool(t, "apt-get"), Tool(t, "dpkg-deb")
	foreignBusyboxes.mu.Lock()
	defer foreignBusyboxes.mu.Unlock()
	if p, ok := foreignBusyboxes.paths[debArch]; ok {
		return p
	}
	root, err := binDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "busybox-"+debArch)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	download := exec.Command(aptGet, "download", "busybox-static:"+debArch)
	download.Dir = dir
	if out, err := download.CombinedOutput(); err != nil {
		missing(t, "apt-get download busybox-static:%s failed (run `dpkg --add-architecture %s && apt-get update` first): %v\n%s", debArch, debArch, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "busybox-static_*_"+debArch+".deb"))
	if len(debs) != 1 {
		t.Fatalf("ForeignBusybox: apt-get download left %v in %s, want one busybox-static .deb", debs, dir)
	}
	RunCmd(t, exec.Command(dpkgDeb, "-x", debs[0], filepath.Join(dir, "root")))
	p := filepath.Join(dir, "root", "bin", "busybox")
	if m, err := ELFMachine(p); err != nil || m != arch.machine {
		t.Fatalf("ForeignBusybox: %s is %v (%v), want an ELF for %v", p, m, err, arch.machine)
	}
	if foreignBusyboxes.paths == nil {
		foreignBusyboxes.paths = map[string]string{}
	}
	foreignBusyboxes.paths[debArch] = p
	return p
}

// ELFMachine is the machine (architecture) an ELF file's header names.
func ELFMachine(path string) (elf.Machine, error) {
	f, err := elf.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Machine, nil
}

func mustMkdir(t testing.TB, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // WriteFile's mode is masked by umask
		t.Fatal(err)
	}
}
