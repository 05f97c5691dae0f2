package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// RequireToolsEnv is the environment variable that, when set to "1", turns
// every "missing tool" skip into a test failure. CI sets it so that nothing is
// silently skipped.
const RequireToolsEnv = "NIXOCI_REQUIRE_TOOLS"

// Tool returns the absolute path of a required external program.
//
// It looks in PATH, then in $HOME/go/bin, then in $GOBIN and in the bin
// directory of every GOPATH entry ($GOPATH, or `go env GOPATH` when unset),
// where Go-installed tools such as oras live. If the program is not found it
// calls t.Skip with a message naming it, unless NIXOCI_REQUIRE_TOOLS=1, in
// which case it calls t.Fatal.
func Tool(t testing.TB, name string) string {
	t.Helper()
	if p, ok := findTool(name); ok {
		return p
	}
	missing(t, "required tool %q not found in PATH, $HOME/go/bin, $GOBIN or GOPATH/bin", name)
	return ""
}

// missing reports a missing prerequisite: t.Skip normally, t.Fatal when
// NIXOCI_REQUIRE_TOOLS=1.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(RequireToolsEnv) == "1" {
		t.Fatalf("testenv: "+format+" (and %s=1 forbids skipping)", append(args, RequireToolsEnv)...)
		return
	}
	t.Skipf("testenv: "+format+" (skipping; set %s=1 to make this a failure)", append(args, RequireToolsEnv)...)
}

// requireFile skips (or fails, see Tool) unless path exists.
func requireFile(t testing.TB, path, why string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		missing(t, "required file %s (%s) is not usable: %v", path, why, err)
	}
}

func findTool(name string) (string, bool) {
	if strings.ContainsRune(name, filepath.Separator) {
		if isExecutable(name) {
			abs, err := filepath.Abs(name)
			return abs, err == nil
		}
		return "", false
	}
	if p, err := exec.LookPath(name); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs, true
		}
	}
	for _, dir := range goBinDirs() {
		p := filepath.Join(dir, name)
		if isExecutable(p) {
			if abs, err := filepath.Abs(p); err == nil {
				return abs, true
			}
		}
	}
	return "", false
}

// goBinDirs lists the directories where `go install` may have put a tool.
func goBinDirs() []string {
	var dirs []string
	if home, err := os.UserHomeDir(); err == nil && home != "" {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		dirs = append(dirs, gobin)
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if goTool, err := exec.LookPath("go"); err == nil {
			if out, err := exec.Command(goTool, "env", "GOPATH").Output(); err == nil {
				gopath = strings.TrimSpace(string(out))
			}
		}
	}
	for _, p := range filepath.SplitList(gopath) {
		if p != "" {
			dirs = append(dirs, filepath.Join(p, "bin"))
		}
	}
	return dirs
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
