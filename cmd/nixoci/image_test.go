package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestImagePlatformFlags: --from and --platform mistakes are usage errors
// or name the flag, and tag nothing.
func TestImagePlatformFlags(t *testing.T) {
	t.Setenv("NIXOCI_STORE", t.TempDir())
	cache, app, _ := writeCache(t)
	dir := filepath.Join(t.TempDir(), "l")
	layout := "oci:" + dir
	mustRun(t, "push", "--to", layout+":c", "--from-cache", "file://"+cache, app)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--from", layout + ":c", "--from", "oci:" + dir + "2:c"}, 1, "oci:" + dir + "2: not an OCI image layout"},
		{[]string{"--from", layout + ":c", "--platform", "linux"}, 2, `--platform: platform "linux": want OS/ARCH[/VARIANT]`},
		{[]string{"--from", layout + ":c", "--platform", "linux/amd64,linux/arm64"}, 1, "--platform linux/amd64, linux/arm64: one image has one platform"},
		{[]string{"--from", layout + ":c", "--from", layout + ":c"}, 1, "closure given twice"},
	} {
		code, _, stderr := runCLI(t, append([]string{"image", "--to", layout + ":img"}, tc.args...)...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("image %v: exit %d, stderr %q; want %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
	code, _, _ := runCLI(t, "inspect", layout+":img")
	if code == 0 {
		t.Error("a refused image was tagged")
	}
}
