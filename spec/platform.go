package spec

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// SystemBuiltin is the system of Nix's builtin derivations
// (builtin:fetchurl and friends), which run on any machine: it says
// nothing about where a path runs, so images ignore it.
const SystemBuiltin = "builtin"

// MaxDerivationSize is the largest .drv file a writer reads the system
// of a local store path from (SPEC.md section 4.1); a larger deriver
// records no system.
const MaxDerivationSize = 16 << 20

// ErrNoPlatform: a Nix system has no OCI image platform (SPEC.md section
// 8.5): darwin systems, which no OCI runtime runs, and systems missing
// from the table.
var ErrNoPlatform = errors.New("no OCI image platform")

// systemPlatforms maps Nix systems to the OCI platforms of images built
// from their paths (SPEC.md section 8.5). Architectures and variants are
// Go's GOARCH and GOARM names, as the image-spec asks.
var systemPlatforms = map[string]ocispec.Platform{
	"x86_64-linux":      {OS: "linux", Architecture: "amd64"},
	"aarch64-linux":     {OS: "linux", Architecture: "arm64"},
	"armv7l-linux":      {OS: "linux", Architecture: "arm", Variant: "v7"},
	"armv6l-linux":      {OS: "linux", Architecture: "arm", Variant: "v6"},
	"armv5tel-linux":    {OS: "linux", Architecture: "arm", Variant: "v5"},
	"i686-linux":        {OS: "linux", Architecture: "386"},
	"riscv64-linux":     {OS: "linux", Architecture: "riscv64"},
	"powerpc64le-linux": {OS: "linux", Architecture: "ppc64le"},
	"s390x-linux":       {OS: "linux", Architecture: "s390x"},
	"mips64el-linux":    {OS: "linux", Architecture: "mips64le"},
	"loongarch64-linux": {OS: "linux", Architecture: "loong64"},
}

// SystemPlatform is the OCI platform of images of paths built for the
// Nix system, e.g. linux/arm64 for aarch64-linux. Darwin and unknown
// systems are ErrNoPlatform.
func SystemPlatform(system string) (ocispec.Platform, error) {
	if p, ok := systemPlatforms[system]; ok {
		return p, nil
	}
	if strings.HasSuffix(system, "-darwin") {
		return ocispec.Platform{}, fmt.Errorf("system %s: %w (no OCI runtime runs darwin binaries; images are made for linux systems)", system, ErrNoPlatform)
	}
	return ocispec.Platform{}, fmt.Errorf("system %s: %w (known: %s)", system, ErrNoPlatform, strings.Join(ImageSystems(), ", "))
}

// ImageSystems lists the Nix systems SystemPlatform maps, sorted.
func ImageSystems() []string {
	var s []string
	for k := range systemPlatforms {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}

// PlatformString is "OS/ARCH" or "OS/ARCH/VARIANT", as --platform takes
// it and docker prints it.
func PlatformString(p ocispec.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// ParsePlatform parses "OS/ARCH[/VARIANT]", e.g. linux/arm64 or
// linux/arm/v7.
func ParsePlatform(s string) (ocispec.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || slices.Contains(parts, "") {
		return ocispec.Platform{}, fmt.Errorf("platform %q: want OS/ARCH[/VARIANT], e.g. linux/arm64", s)
	}
	p := ocispec.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// ComparePlatforms orders platforms by OS, architecture, then variant:
// the order of an image index's manifests (SPEC.md section 8.5).
func ComparePlatforms(a, b ocispec.Platform) int {
	return cmp.Or(strings.Compare(a.OS, b.OS), strings.Compare(a.Architecture, b.Architecture), strings.Compare(a.Variant, b.Variant))
}
