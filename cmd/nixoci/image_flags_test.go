package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestImageBuildpacksAndCreatedFlags: --buildpacks-build, --created and
// SOURCE_DATE_EPOCH mistakes are usage errors or name the flag.
func TestImageBuildpacksAndCreatedFlags(t *testing.T) {
	t.Setenv("NIXOCI_STORE", t.TempDir())
	cache, app, _ := writeCache(t)
	layout := "oci:" + filepath.Join(t.TempDir(), "l")
	mustRun(t, "push", "--to", layout+":c", "--from-cache", "file://"+cache, app)
	for _, tc := range []struct {
		args []string
		env  string
		code int
		want string
	}{
		{[]string{"--buildpacks-build"}, "", 2, "--buildpacks-build needs --buildpacks-stack"},
		{[]string{"--created", "yesterday"}, "", 2, `--created "yesterday": want RFC 3339`},
		{nil, "soon", 2, `SOURCE_DATE_EPOCH "soon": want seconds since 1970`},
		{[]string{"--buildpacks-stack", "x", "--buildpacks-build", "--user", "0:0"}, "", 1, `--user "0:0": a Buildpacks build image needs a user other than root`},
	} {
		t.Setenv("SOURCE_DATE_EPOCH", tc.env)
		code, _, stderr := runCLI(t, append([]string{"image", "--from", layout + ":c", "--to", layout + ":img"}, tc.args...)...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("image %v (SOURCE_DATE_EPOCH=%q): exit %d, stderr %q; want %d and %q", tc.args, tc.env, code, stderr, tc.code, tc.want)
		}
	}
}

func TestParseCreated(t *testing.T) {
	want := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct{ flag, env string }{
		{"2026-12-01T00:00:00Z", "1"},
		{"2026-12-01T01:00:00+01:00", ""},
		{"1796083200", ""},
		{"", "1796083200"},
	} {
		got, err := parseCreated(tc.flag, tc.env)
		if err != nil || !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("parseCreated(%q, %q) = %v, %v; want %v", tc.flag, tc.env, got, err, want)
		}
	}
	if got, err := parseCreated("", ""); err != nil || !got.IsZero() {
		t.Errorf("no time given: %v, %v", got, err)
	}
}
