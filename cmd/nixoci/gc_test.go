package main

import (
	"encoding/json"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixoci/nixoci/gc"
	"github.com/nixoci/nixoci/internal/fixture"
)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{"30d", 30 * 24 * time.Hour, false},
		{"1d12h", 36 * time.Hour, false},
		{"0.5d", 12 * time.Hour, false},
		{"90m", 90 * time.Minute, false},
		{"0s", 0, false},
		{"d", 0, true},
		{"-1d", 0, true},
		{"3days", 0, true},
		{"1d2x", 0, true},
		{"ten", 0, true},
	} {
		got, err := parseDuration(tc.in)
		if (err != nil) != tc.bad || !tc.bad && got != tc.want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v (error: %v)", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

// TestGCAndRmUsage: bad flags are usage errors (exit 2) naming what is
// wrong; --help teaches.
func TestGCAndRmUsage(t *testing.T) {
	t.Setenv("NIXOCI_STORE", t.TempDir())
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"gc"}, "want one TARGET"},
		{[]string{"gc", "--match", "ci-*", "oci:/nonexistent"}, "--match needs --keep-last, --keep-within or --keep-none"},
		{[]string{"gc", "--keep-within", "3days", "oci:/x"}, "--keep-within"},
		{[]string{"gc", "--keep-last", "-1", "oci:/x"}, "must not be negative"},
		{[]string{"gc", "--keep-last", "0", "oci:/x"}, "--keep-last 0 would delete every closure tag (0 does not mean unlimited): to delete them all, write --keep-none"},
		{[]string{"gc", "--match", "ci-*", "--keep-last", "0", "--keep-within", "30d", "oci:/x"}, "every closure tag --match selects"},
		{[]string{"gc", "--keep-within", "0s", "oci:/x"}, "write --keep-none"},
		{[]string{"gc", "--keep-none", "--keep-last", "3", "oci:/x"}, "--keep-none keeps nothing"},
		{[]string{"gc", "--match", "[", "--keep-last", "1", "oci:/x"}, "match pattern"},
		{[]string{"gc", "--grace", "soon", "oci:/x"}, "--grace"},
		{[]string{"rm"}, "no TARGET:TAG"},
		{[]string{"rm", "oci:/x"}, "no tag given"},
	} {
		code, _, stderr := runCLI(t, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("nixoci %s: exit %d, %q; want 2 and %q", strings.Join(tc.args, " "), code, stderr, tc.want)
		}
	}
	for _, cmd := range []string{"gc", "rm"} {
		code, stdout, _ := runCLI(t, cmd, "--help")
		if code != 0 || !strings.Contains(stdout, "Examples:") || !strings.Contains(stdout, "nixoci gc") {
			t.Errorf("nixoci %s --help: exit %d\n%s", cmd, code, stdout)
		}
	}
	code, stdout, _ := runCLI(t, "gc", "--help")
	for _, want := range []string{"garbage-collect", "zot", "Harbor", "GHCR", "--grace", "30d", "serve\n--upload"} {
		if code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("nixoci gc --help does not mention %q", want)
		}
	}
}

// TestCLIGCLayout: rm then gc of a layout through the CLI: the text
// output lists what went, --json parses as a gc.Result.
func TestCLIGCLayout(t *testing.T) {
	t.Setenv("NIXOCI_STORE", t.TempDir())
	cache, app, lib := writeCache(t)
	layout := "oci:" + filepath.Join(t.TempDir(), "layout")
	mustRun(t, "push", "--to", layout+":app", "--from-cache", "file://"+cache, app)
	mustRun(t, "push", "--to", layout+":lib", "--from-cache", "file://"+cache, lib)
	if out := mustRun(t, "rm", layout+":app"); !strings.Contains(out, "removed "+layout+":app (closure") {
		t.Errorf("rm printed %q", out)
	}
	dir := strings.TrimPrefix(layout, "oci:")
	before := fixture.FileDigests(t, dir)
	out := mustRun(t, "gc", "--json", "--dry-run", layout)
	var res gc.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("gc --json: %v\n%s", err, out)
	}
	if !res.DryRun || len(res.Removed) != 0 || res.BlobFiles != 0 || !pendingPath(res, app, res.Marked.Add(time.Hour)) {
		t.Errorf("dry run with the default grace: %+v; want app's path pending for an hour, nothing removed", res)
	}
	if after := fixture.FileDigests(t, dir); !maps.Equal(before, after) {
		t.Error("the dry run changed the layout")
	}
	// The first real run deletes nothing and says when it may.
	code, stdout, stderr := runCLI(t, "gc", layout)
	if code != 0 || strings.Contains(stdout, "removed path") || !strings.Contains(stdout, "pending path "+app) ||
		!strings.Contains(stderr, "unreachable for less than --grace 1h0m0s: deletable from") || !strings.Contains(stderr, "run nixoci gc again then") {
		t.Errorf("the first gc: exit %d\n%s\n%s", code, stdout, stderr)
	}
	out = mustRun(t, "gc", "--json", "--dry-run", "--grace", "0s", layout)
	res = gc.Result{}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("gc --json: %v\n%s", err, out)
	}
	if !res.DryRun || res.Paths != 1 || res.BlobFiles == 0 {
		t.Errorf("dry run with no grace: %+v; want app's one path and some blob files", res)
	}
	_, stdout, stderr = runCLI(t, "gc", "--grace", "0s", layout)
	if !strings.Contains(stdout, "removed path "+app) || strings.Contains(stdout, lib) || !strings.Contains(stderr, "1 path") {
		t.Errorf("gc printed\n%s\n%s", stdout, stderr)
	}
	if code, _, stderr := runCLI(t, "gc", "--wait", "--dry-run", layout); code != 2 || !strings.Contains(stderr, "--wait deletes") {
		t.Errorf("--wait --dry-run: exit %d, %q", code, stderr)
	}
}

// pendingPath reports whether res lists storePath as pending, deletable
// at deletable.
func pendingPath(res gc.Result, storePath string, deletable time.Time) bool {
	for _, it := range res.Pending {
		if it.Kind == gc.KindPath && it.StorePath == storePath && it.DeletableAt.Equal(deletable) {
			return true
		}
	}
	return false
}

// TestCLIKeepLastZero: --keep-last 0 is refused (exit 2) and changes
// nothing; --keep-none is the word that drops every selected closure.
func TestCLIKeepLastZero(t *testing.T) {
	t.Setenv("NIXOCI_STORE", t.TempDir())
	cache, app, lib := writeCache(t)
	dir := filepath.Join(t.TempDir(), "layout")
	layout := "oci:" + dir
	mustRun(t, "push", "--to", layout+":ci-app", "--from-cache", "file://"+cache, app)
	mustRun(t, "push", "--to", layout+":release", "--from-cache", "file://"+cache, lib)
	before := fixture.FileDigests(t, dir)
	for _, args := range [][]string{
		{"gc", "--keep-last", "0", "--grace", "0s", layout},
		{"gc", "--match", "ci-*", "--keep-last", "0", "--grace", "0s", layout},
	} {
		code, stdout, stderr := runCLI(t, args...)
		if code != 2 || !strings.Contains(stderr, "--keep-none") || stdout != "" {
			t.Errorf("nixoci %s: exit %d, %q; want 2 naming --keep-none", strings.Join(args, " "), code, stderr)
		}
	}
	if after := fixture.FileDigests(t, dir); !maps.Equal(before, after) {
		t.Error("a refused --keep-last 0 changed the layout")
	}
	_, stdout, _ := runCLI(t, "gc", "--match", "ci-*", "--keep-none", "--grace", "0s", layout)
	if !strings.Contains(stdout, "retention drops closure tag ci-app") || !strings.Contains(stdout, "(tag ci-app)") ||
		!strings.Contains(stdout, "removed path "+app) || strings.Contains(stdout, "release") {
		t.Errorf("--match 'ci-*' --keep-none removed\n%s\nwant ci-app and its path, not release", stdout)
	}
	mustRun(t, "inspect", layout+":release")
}

// TestCLIGCJSONLists: --json always gives removed and pending as lists,
// empty or not, for scripts.
func TestCLIGCJSONLists(t *testing.T) {
	t.Setenv("NIXOCI_STORE", t.TempDir())
	cache, app, _ := writeCache(t)
	layout := "oci:" + filepath.Join(t.TempDir(), "layout")
	mustRun(t, "push", "--to", layout+":app", "--from-cache", "file://"+cache, app)
	for _, args := range [][]string{{"--dry-run"}, {"--dry-run", "--grace", "0s"}, {}, {"--grace", "0s"}} {
		out := mustRun(t, append(append([]string{"gc", "--json"}, args...), layout)...)
		var raw map[string]json.RawMessage
		if err := json.Unmarshal([]byte(out), &raw); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"removed", "pending"} {
			if s := string(raw[k]); !strings.HasPrefix(s, "[") {
				t.Errorf("gc --json %v: %s is %s, want a list", args, k, s)
			}
		}
	}
}
