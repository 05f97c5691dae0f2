package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// built holds the binaries BuildBinary made in this test process.
var built struct {
	mu     sync.Mutex
	dir    string // os.MkdirTemp dir holding all of them; "" until the first build
	builds map[string]*buildResult
}

type buildResult struct {
	once sync.Once
	path string
	err  error
}

// BuildBinary builds the main package pkg with `go build` once per test
// process (later calls, from any test, get the same binary) into a temp dir
// shared by the process, and returns the binary's path. pkg is either an
// import path ("github.com/nixoci/nixoci/cmd/nixoci", resolved from the
// current directory, which under `go test` is inside the module) or a
// directory: absolute, or relative starting with "./" or "../" (which also
// builds directories the go tool skips in patterns, such as testdata/...).
// If the build fails, the test fails with the compiler output, and so does
// every later call for the same pkg.
//
// The temp dir is removed by CleanupBinaries; call it from TestMain, or use
// Main, which does.
func BuildBinary(t testing.TB, pkg string) string {
	t.Helper()
	key, dir, isDir, err := buildKey(pkg)
	if err != nil {
		t.Fatalf("BuildBinary %s: %v", pkg, err)
	}
	built.mu.Lock()
	if built.builds == nil {
		built.builds = map[string]*buildResult{}
	}
	res, ok := built.builds[key]
	if !ok {
		res = &buildResult{}
		built.builds[key] = res
	}
	n := len(built.builds)
	built.mu.Unlock()

	goTool := Tool(t, "go")
	res.once.Do(func() {
		outDir, err := binDir()
		if err != nil {
			res.err = err
			return
		}
		name := path.Base(filepath.ToSlash(key))
		out := filepath.Join(outDir, fmt.Sprintf("%s-%d", name, n))
		var cmd *exec.Cmd
		if isDir {
			cmd = exec.Command(goTool, "build", "-o", out, ".")
			cmd.Dir = dir
		} else {
			cmd = exec.Command(goTool, "build", "-o", out, pkg)
		}
		if _, _, err := RunCmdErr(cmd); err != nil {
			res.err = err
			return
		}
		res.path = out
	})
	if res.err != nil {
		t.Fatalf("BuildBinary %s: %v", pkg, res.err)
	}
	return res.path
}

// buildKey tells whether pkg is a directory and gives the key the build is
// remembered under (the absolute directory, or the import path).
func buildKey(pkg string) (key, dir string, isDir bool, err error) {
	if filepath.IsAbs(pkg) || pkg == "." || pkg == ".." ||
		strings.HasPrefix(pkg, "./") || strings.HasPrefix(pkg, "../") {
		abs, err := filepath.Abs(pkg)
		if err != nil {
			return "", "", false, err
		}
		fi, err := os.Stat(abs)
		if err != nil {
			return "", "", false, err
		}
		if !fi.IsDir() {
			return "", "", false, fmt.Errorf("%s is not a directory", abs)
		}
		return abs, abs, true, nil
	}
	return pkg, "", false, nil
}

func binDir() (string, error) {
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.dir == "" {
		d, err := os.MkdirTemp("", "nixoci-testenv-bin-")
		if err != nil {
			return "", err
		}
		built.dir = d
	}
	return built.dir, nil
}

// CleanupBinaries removes the binaries BuildBinary made in this process and
// forgets them. Call it from TestMain after m.Run (or use Main).
func CleanupBinaries() {
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
	built.dir = ""
	built.builds = nil
}

// Main is a TestMain body: it runs the tests, removes the binaries built by
// BuildBinary and exits with the tests' exit code.
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	CleanupBinaries()
	os.Exit(code)
}
