package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// pushFlags is a flag set with the kinds of flags nixoci's commands have.
type pushFlags struct {
	tag   *string
	jobs  *int
	json  *bool
	keys  stringList
	usage bytes.Buffer
}

func (f *pushFlags) parse(args []string) ([]string, error) {
	fs := newFlagSet("push", pushHelp, &f.usage)
	f.tag = fs.String("tag", "", "tag")
	f.jobs = fs.Int("jobs", 0, "jobs")
	f.json = fs.Bool("json", false, "json")
	fs.Var(&f.keys, "sign-key", "key (repeatable)")
	return parseFlags(fs, args)
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantPos  []string
		wantTag  string
		wantJobs int
		wantJSON bool
		wantKeys []string
	}{
		{"positionals only", []string{"a", "b"}, []string{"a", "b"}, "", 0, false, nil},
		{"nothing", nil, nil, "", 0, false, nil},
		{"flags first", []string{"--tag", "t", "-jobs=3", "a"}, []string{"a"}, "t", 3, false, nil},
		{"flags after positionals", []string{"a", "--tag", "t", "b", "--jobs", "2"}, []string{"a", "b"}, "t", 2, false, nil},
		{"flags between", []string{"a", "-json", "b", "--tag=x", "c"}, []string{"a", "b", "c"}, "x", 0, true, nil},
		{"double dash first", []string{"--", "-a", "--tag", "x"}, []string{"-a", "--tag", "x"}, "", 0, false, nil},
		{"double dash after positional", []string{"a", "--", "--tag", "x"}, []string{"a", "--tag", "x"}, "", 0, false, nil},
		{"double dash after flags", []string{"a", "--jobs", "4", "--", "-b"}, []string{"a", "-b"}, "", 4, false, nil},
		{"later double dash is positional", []string{"--", "a", "--", "b"}, []string{"a", "--", "b"}, "", 0, false, nil},
		{"repeated sign-key", []string{"--sign-key", "k1", "p", "--sign-key=k2", "-sign-key", "k3"}, []string{"p"}, "", 0, false, []string{"k1", "k2", "k3"}},
		{"last tag wins", []string{"--tag", "a", "--tag", "b", "p"}, []string{"p"}, "b", 0, false, nil},
		{"single dash positional", []string{"-", "p"}, []string{"-", "p"}, "", 0, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f pushFlags
			got, err := f.parse(tt.args)
			if err != nil {
				t.Fatalf("parseFlags(%q): %v", tt.args, err)
			}
			if !slices.Equal(got, tt.wantPos) {
				t.Errorf("positionals = %q, want %q", got, tt.wantPos)
			}
			if *f.tag != tt.wantTag || *f.jobs != tt.wantJobs || *f.json != tt.wantJSON || !slices.Equal(f.keys, tt.wantKeys) {
				t.Errorf("tag %q jobs %d json %v keys %q; want %q %d %v %q", *f.tag, *f.jobs, *f.json, f.keys, tt.wantTag, tt.wantJobs, tt.wantJSON, tt.wantKeys)
			}
		})
	}
}

func TestParseFlagsErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want error
	}{
		{"unknown flag", []string{"--nope"}, errUsage},
		{"unknown flag after positional", []string{"a", "--nope"}, errUsage},
		{"bad int", []string{"--jobs", "many"}, errUsage},
		{"missing value", []string{"a", "--tag"}, errUsage},
		{"help", []string{"--help"}, errHelp},
		{"help after positional", []string{"a", "-h"}, errHelp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f pushFlags
			_, err := f.parse(tt.args)
			if !errors.Is(err, tt.want) {
				t.Fatalf("parseFlags(%q) error = %v, want %v", tt.args, err, tt.want)
			}
			if help := f.usage.String(); tt.want == errHelp && !strings.Contains(help, "Usage: nixoci push") {
				t.Errorf("--help printed %q, want the usage text", help)
			}
		})
	}
}

// TestParseFlagsDoubleDashValue: "--" as the value of a flag is not the
// end of the flags.
func TestParseFlagsDoubleDashValue(t *testing.T) {
	var f pushFlags
	got, err := f.parse([]string{"--tag", "--", "p", "--jobs", "2"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"p"}) || *f.tag != "--" || *f.jobs != 2 {
		t.Errorf("positionals %q, tag %q, jobs %d; want [p], --, 2", got, *f.tag, *f.jobs)
	}
}

// runCLI runs nixoci with args and returns its exit code and output.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestRunHelpAndVersion(t *testing.T) {
	t.Setenv("NIXOCI_STORE", t.TempDir())
	tests := []struct {
		args       []string
		wantCode   int
		wantStdout []string
		wantStderr []string
	}{
		{nil, 0, []string{"Usage:", "push", "pull", "inspect", "version", "oci:DIR"}, nil},
		{[]string{"help"}, 0, []string{"Usage:", "Commands:"}, nil},
		{[]string{"--help"}, 0, []string{"Usage:"}, nil},
		{[]string{"-h"}, 0, []string{"Usage:"}, nil},
		{[]string{"help", "push"}, 0, []string{"Usage: nixoci push", "Flags:", "-sign-key", "-from-cache"}, nil},
		{[]string{"push", "--help"}, 0, []string{"Usage: nixoci push", "Flags:"}, nil},
		{[]string{"help", "pull"}, 0, []string{"Usage: nixoci pull", "-to"}, nil},
		{[]string{"inspect", "-h"}, 0, []string{"Usage: nixoci inspect", "-json"}, nil},
		{[]string{"version"}, 0, []string{"nixoci " + version + "\n"}, nil},
		{[]string{"frobnicate"}, 2, nil, []string{`unknown command "frobnicate"`, "Usage:"}},
		{[]string{"help", "frobnicate"}, 2, nil, []string{"unknown command"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tt.wantCode, stderr)
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout does not contain %q:\n%s", w, stdout)
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not contain %q:\n%s", w, stderr)
				}
			}
			if tt.wantCode == 0 && stderr != "" {
				t.Errorf("unexpected stderr %q", stderr)
			}
			if tt.wantCode != 0 && stdout != "" {
				t.Errorf("unexpected stdout %q", stdout)
			}
		})
	}
	_, a, _ := runCLI(t, "help", "push")
	_, b, _ := runCLI(t, "push", "--help")
	if a != b {
		t.Errorf("'help push' and 'push --help' differ:\n%s\n---\n%s", a, b)
	}
}

// TestRunFlagErrors: a mistyped flag is a usage error on stderr pointing
// to --help, exit code 2; standard output, whose last line scripts read as
// the closure digest, stays empty.
func TestRunFlagErrors(t *testing.T) {
	for _, args := range [][]string{{"push", "--frobnicate"}, {"pull", "--jobs", "x"}, {"inspect", "--json=maybe"}} {
		code, stdout, stderr := runCLI(t, args...)
		if code != 2 || !strings.Contains(stderr, "nixoci "+args[0]+": usage error") {
			t.Errorf("%q: exit code %d, stderr %q; want 2 and a usage error", args, code, stderr)
		}
		if !strings.Contains(stderr, "Run 'nixoci "+args[0]+" --help'") {
			t.Errorf("%q: stderr %q does not point to --help", args, stderr)
		}
		if stdout != "" {
			t.Errorf("%q: stdout = %q, want nothing", args, stdout)
		}
	}
}

func TestRunUsageErrors(t *testing.T) {
	t.Setenv("NIXOCI_STORE", t.TempDir())
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	dir := t.TempDir()
	const path = "/nix/store/wmax4jpcbcyvaqcx04skyir4x9j40ygh-fx-app"
	tests := []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"invalid tag", []string{"push", "--tag", ".bad", path}, "invalid tag"},
		{"tag too long", []string{"push", "--tag", strings.Repeat("t", 129), path}, "invalid tag"},
		{"invalid tag after path", []string{"push", path, "--tag=-x"}, "invalid tag"},
		{"no paths", []string{"push", "--tag", "ok"}, "no store paths"},
		{"unknown compression", []string{"push", "--compression", "lz4", path}, "lz4"},
		{"bare directory target", []string{"push", "--to", dir, path}, "write oci:" + dir},
		{"two tags", []string{"push", "--to", "oci:" + dir + ":one", "--tag", "two", path}, `"one"`},
		{"digest target", []string{"push", "--to", "oci:" + dir + "@sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", path}, "not a valid tag"},
		{"compression with cache", []string{"push", "--to", "oci:" + dir, "--from-cache", "file:///tmp/c", "--compression", "xz", path}, "--compression"},
		{"bad cache URL", []string{"push", "--to", "oci:" + dir, "--from-cache", "s3://bucket", path}, "s3://bucket"},
		{"pull without --to", []string{"pull", "oci:" + dir + ":t"}, "--to"},
		{"pull without tag", []string{"pull", "oci:" + dir, "--to", dir}, "append :TAG"},
		{"pull two targets", []string{"pull", "oci:" + dir + ":a", "oci:" + dir + ":b", "--to", dir}, "exactly one"},
		{"pull bad target", []string{"pull", "Bad/Repo:t", "--to", dir}, "invalid target"},
		{"inspect without tag", []string{"inspect", "oci:" + dir}, "append :TAG"},
		{"inspect nothing", []string{"inspect"}, "exactly one"},
		{"upstream without key", []string{"serve", "--from", "oci:" + dir, "--upstream", "https://cache.example"}, "--upstream-key"},
		{"upstream key alone", []string{"serve", "--from", "oci:" + dir, "--upstream-key", "k-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="}, "need --upstream"},
		{"upstream without blob cache", []string{"serve", "--from", "oci:" + dir, "--upstream", "https://cache.example", "--upstream-unverified", "--blob-cache-size", "0"}, "--blob-cache-size"},
		{"upstream bad key", []string{"serve", "--from", "oci:" + dir, "--upstream", "https://cache.example", "--upstream-key", "nonsense"}, "--upstream-key"},
		{"upstream bad URL", []string{"serve", "--from", "oci:" + dir, "--upstream", "s3://bucket", "--upstream-unverified"}, "s3://bucket"},
		{"upstream with redirects", []string{"serve", "--from", "oci:" + dir, "--upstream", "https://cache.example", "--upstream-unverified", "--redirect-blobs"}, "--redirect-blobs"},
		{"bad record instance", []string{"serve", "--from", "oci:" + dir, "--instance", "CI Runner/7"}, `"ci-runner-7"`},
		{"records off", []string{"serve", "--from", "oci:" + dir, "--record-interval", "0s"}, "--record-interval must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tt.args...)
			if code != 2 {
				t.Errorf("exit code %d, want 2 (stderr %q)", code, stderr)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr does not contain %q:\n%s", tt.want, stderr)
			}
			if !strings.Contains(stderr, "--help' for usage") {
				t.Errorf("stderr has no pointer to --help:\n%s", stderr)
			}
			if stdout != "" {
				t.Errorf("unexpected stdout %q", stdout)
			}
		})
	}
}

// TestRunUsageErrorWritesNothing: a command refused for how it was called
// leaves the target alone.
func TestRunUsageErrorWritesNothing(t *testing.T) {
	t.Setenv("NIXOCI_STORE", filepath.Join(t.TempDir(), "default"))
	const path = "/nix/store/wmax4jpcbcyvaqcx04skyir4x9j40ygh-fx-app"
	for _, args := range [][]string{
		{"push", "--to", "oci:DIR:one", "--tag", "two", path},
		{"push", "--to", "oci:DIR", "--from-cache", "file:///tmp/c", "--compression", "xz", path},
		{"push", "--to", "oci:DIR", "--from-cache", "s3://bucket", path},
		{"push", "--from-cache", "s3://bucket", path},
	} {
		dir := filepath.Join(t.TempDir(), "layout")
		for i := range args {
			args[i] = strings.ReplaceAll(args[i], "DIR", dir)
		}
		if code, _, stderr := runCLI(t, args...); code != 2 {
			t.Fatalf("%q: exit code %d, want 2 (%s)", args, code, stderr)
		}
		for _, d := range []string{dir, os.Getenv("NIXOCI_STORE")} {
			if _, err := os.Stat(d); err == nil {
				t.Errorf("%q: created %s", args, d)
			}
		}
	}
}

func TestRunFailures(t *testing.T) {
	t.Setenv("NIXOCI_STORE", t.TempDir())
	missing := t.TempDir() + "/missing"
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"pull from a missing layout", []string{"pull", "oci:" + missing + ":t", "--to", t.TempDir()}, "not an OCI image layout"},
		{"inspect a missing layout", []string{"inspect", "oci:" + missing + ":t"}, "not an OCI image layout"},
		{"missing key file", []string{"push", "--to", "oci:" + t.TempDir(), "--sign-key", missing, "--from-cache", "file://" + t.TempDir(), "/nix/store/wmax4jpcbcyvaqcx04skyir4x9j40ygh-fx-app"}, "secret key"},
		{"path not in cache", []string{"push", "--to", "oci:" + t.TempDir(), "--from-cache", "file://" + t.TempDir(), "/nix/store/wmax4jpcbcyvaqcx04skyir4x9j40ygh-fx-app"}, "not in binary cache"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tt.args...)
			if code != 1 {
				t.Errorf("exit code %d, want 1 (stderr %q)", code, stderr)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr does not contain %q:\n%s", tt.want, stderr)
			}
		})
	}
}

func TestHuman(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{999, "999 B"},
		{1000, "1.0 kB"},
		{1500, "1.5 kB"},
		{999_999, "1000.0 kB"},
		{1_000_000, "1.0 MB"},
		{2_500_000_000, "2.5 GB"},
	}
	for _, tt := range tests {
		if got := human(tt.n); got != tt.want {
			t.Errorf("human(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

// TestImageOpensTheNamedLayout: a layout directory whose name holds a
// colon is opened as parsed, not re-parsed from its string form (which
// would read "x:y" as directory x, tag y), and a bad --from is refused
// before the destination is created.
func TestImageOpensTheNamedLayout(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	dir := t.TempDir()
	layout := "oci:" + filepath.Join(dir, "x:y")
	code, _, stderr := runCLI(t, "image", "--from", layout+":nosuchclosure", "--to", layout+":img")
	if code == 0 || !strings.Contains(stderr, "nosuchclosure") {
		t.Errorf("image from a missing closure: exit %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "x:y", "oci-layout")); err != nil {
		t.Errorf("the layout x:y was not the one opened: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
		t.Errorf("a layout x was created from a re-parsed x:y")
	}

	other := filepath.Join(dir, "other")
	code, _, _ = runCLI(t, "image", "--from", "oci:"+dir+"/notag", "--to", "oci:"+other+":img")
	if code != 2 {
		t.Errorf("image --from without a tag: exit %d, want 2", code)
	}
	if _, err := os.Stat(other); err == nil {
		t.Errorf("a bad --from still created the destination %s", other)
	}
}
