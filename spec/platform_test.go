package spec_test

import (
	"errors"
	"testing"

	"github.com/nixoci/nixoci/spec"
)

// TestSystemPlatform: the table of SPEC.md section 8.5, and refusals.
func TestSystemPlatform(t *testing.T) {
	for system, want := range map[string]string{
		"x86_64-linux":      "linux/amd64",
		"aarch64-linux":     "linux/arm64",
		"armv7l-linux":      "linux/arm/v7",
		"armv6l-linux":      "linux/arm/v6",
		"i686-linux":        "linux/386",
		"riscv64-linux":     "linux/riscv64",
		"powerpc64le-linux": "linux/ppc64le",
		"s390x-linux":       "linux/s390x",
	} {
		p, err := spec.SystemPlatform(system)
		if err != nil || spec.PlatformString(p) != want {
			t.Errorf("SystemPlatform(%s) = %s, %v; want %s", system, spec.PlatformString(p), err, want)
		}
		if back, err := spec.ParsePlatform(want); err != nil || spec.PlatformString(back) != want || back.Variant != p.Variant {
			t.Errorf("ParsePlatform(%s) = %+v, %v; want %+v", want, back, err, p)
		}
	}
	for _, system := range []string{"x86_64-darwin", "aarch64-darwin", "builtin", "x86_64-freebsd", ""} {
		if _, err := spec.SystemPlatform(system); !errors.Is(err, spec.ErrNoPlatform) {
			t.Errorf("SystemPlatform(%q) = %v, want ErrNoPlatform", system, err)
		}
	}
	for _, bad := range []string{"linux", "linux/", "/amd64", "linux/arm/v7/x", ""} {
		if _, err := spec.ParsePlatform(bad); err == nil {
			t.Errorf("ParsePlatform(%q) accepted", bad)
		}
	}
}
