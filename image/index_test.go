package image_test

import (
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/image"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/spec"
)

// multiLayout holds closures for amd64 (x86, also x86b), arm64 (arm) and
// darwin, mixed ones, and one recording no system; "shared" (no system)
// is in x86 and arm.
func multiLayout(t *testing.T) *backend.Layout {
	l := fixture.Layout(t)
	fixture.SystemClosure(t, l, "x86", fixture.SystemPath{Name: "app-x86", System: "x86_64-linux"}, fixture.SystemPath{Name: "lib-x86", System: "x86_64-linux"}, fixture.SystemPath{Name: "shared", System: ""})
	fixture.SystemClosure(t, l, "x86b", fixture.SystemPath{Name: "tool-x86", System: "x86_64-linux"})
	fixture.SystemClosure(t, l, "arm", fixture.SystemPath{Name: "app-arm", System: "aarch64-linux"}, fixture.SystemPath{Name: "shared", System: ""}, fixture.SystemPath{Name: "src", System: spec.SystemBuiltin})
	fixture.SystemClosure(t, l, "mac", fixture.SystemPath{Name: "app-mac", System: "aarch64-darwin"})
	fixture.SystemClosure(t, l, "mixed", fixture.SystemPath{Name: "app-mixed", System: "x86_64-linux"}, fixture.SystemPath{Name: "lib-arm", System: "aarch64-linux"})
	fixture.SystemClosure(t, l, "nosys", fixture.SystemPath{Name: "app-nosys", System: ""})
	return l
}

// multiOptions link both apps, whose bin/run is the entrypoint.
var multiOptions = image.Options{
	LinkRoots:  []string{fixture.StorePath("app-x86"), fixture.StorePath("app-arm")},
	Entrypoint: []string{"/bin/run"},
}

func readIndex(t *testing.T, l *backend.Layout, ref string) (ocispec.Descriptor, ocispec.Index) {
	t.Helper()
	desc, data, err := backend.FetchManifest(t.Context(), l, ref)
	if err != nil {
		t.Fatal(err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		t.Fatal(err)
	}
	return desc, idx
}

// TestBuildPlatforms: closures of two systems make an index of two
// images, ordered by platform whatever the order of the closures, each
// image the one its closure alone makes; a path both hold is one layer,
// converted once; the digests are pinned.
func TestBuildPlatforms(t *testing.T) {
	ctx := t.Context()
	l := multiLayout(t)
	opts := multiOptions
	opts.NixSnapshotter = true
	res, err := image.BuildPlatforms(ctx, l, []string{"x86", "arm"}, l, "multi", opts)
	if err != nil {
		t.Fatal(err)
	}
	desc, idx := readIndex(t, l, "multi")
	if desc.MediaType != ocispec.MediaTypeImageIndex || desc.Digest != res.Manifest.Digest {
		t.Fatalf("tag multi names %s %s, want the index %s", desc.MediaType, desc.Digest, res.Manifest.Digest)
	}
	var got []string
	for _, m := range idx.Manifests {
		got = append(got, spec.PlatformString(*m.Platform))
	}
	if strings.Join(got, " ") != "linux/amd64 linux/arm64" {
		t.Errorf("index platforms %v, want linux/amd64 linux/arm64", got)
	}
	// 3 x86 paths and 3 arm paths, "shared" in both: 5 layers converted.
	if res.Converted != 5 || res.Reused != 0 {
		t.Errorf("converted %d, reused %d; want 5 and 0", res.Converted, res.Reused)
	}
	if res.Images[0].System != "x86_64-linux" || res.Images[1].System != "aarch64-linux" {
		t.Errorf("image systems %q %q", res.Images[0].System, res.Images[1].System)
	}

	// Each platform's image is the single image of its closure.
	for i, ref := range []string{"x86", "arm"} {
		alone := opts
		alone.LinkRoots = []string{fixture.StorePath("app-" + ref)}
		single, err := image.Build(ctx, l, ref, l, "single-"+ref, alone)
		if err != nil {
			t.Fatal(err)
		}
		if idx.Manifests[i].Digest != single.Manifest.Digest {
			t.Errorf("%s entry of the index is %s, the image of %s alone %s", got[i], idx.Manifests[i].Digest, ref, single.Manifest.Digest)
		}
		if single.Reused != 3 {
			t.Errorf("image of %s alone reused %d layers, want 3", ref, single.Reused)
		}
		_, nix := readIndex(t, l, "multi-nix")
		if nix.Manifests[i].Digest != single.Snapshotter.Digest {
			t.Errorf("%s entry of the nix-snapshotter index is %s, want %s", got[i], nix.Manifests[i].Digest, single.Snapshotter.Digest)
		}
	}

	// Neither the order of the closures nor parallelism matters.
	opts.Jobs = 1
	again, err := image.BuildPlatforms(ctx, l, []string{"arm", "x86"}, fixture.Layout(t), "multi", opts)
	if err != nil {
		t.Fatal(err)
	}
	if again.Manifest.Digest != res.Manifest.Digest || again.Snapshotter.Digest != res.Snapshotter.Digest {
		t.Errorf("closures in another order: index %s, -nix %s; want %s, %s", again.Manifest.Digest, again.Snapshotter.Digest, res.Manifest.Digest, res.Snapshotter.Digest)
	}

	// Pinned: a change here changes the digest of every multi-platform
	// image (spec/SPEC.md section 8.5): a format decision. Format
	// version 5 (a history entry per layer) changed them from
	// sha256:52469db8… and sha256:d4e0be82….
	const (
		wantIndex = "sha256:80a57a9b0cb893e28e8168fc570140f0f72feffe3766dc681a0b5ab0091cc634"
		wantNix   = "sha256:6021116fb9fbc43a95f1ce65a44d921825b41f4922ebeb587ec962fd6746db5f"
	)
	if res.Manifest.Digest.String() != wantIndex || res.Snapshotter.Digest.String() != wantNix {
		t.Errorf("index %s and nix-snapshotter index %s, were %s and %s: the image index format changed (SPEC.md section 8.5)",
			res.Manifest.Digest, res.Snapshotter.Digest, wantIndex, wantNix)
	}
}

// TestBuildPlatformsFilter: Platforms selects among the closures' images;
// one left is a plain image, the one its closure alone makes.
func TestBuildPlatformsFilter(t *testing.T) {
	ctx := t.Context()
	l := multiLayout(t)
	opts := multiOptions
	opts.Platforms = []ocispec.Platform{{OS: "linux", Architecture: "arm64"}}
	res, err := image.BuildPlatforms(ctx, l, []string{"x86", "arm"}, l, "arm-only", opts)
	if err != nil {
		t.Fatal(err)
	}
	alone := multiOptions
	alone.LinkRoots = []string{fixture.StorePath("app-arm")}
	single, err := image.Build(ctx, l, "arm", l, "arm-alone", alone)
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest.MediaType != ocispec.MediaTypeImageManifest || res.Manifest.Digest != single.Manifest.Digest {
		t.Errorf("filtered to linux/arm64: %s %s, want the image of arm alone %s", res.Manifest.MediaType, res.Manifest.Digest, single.Manifest.Digest)
	}
}

// TestBuildUnionBySystem: BuildUnion merges closures of one system into
// one image and makes an index when they record several.
func TestBuildUnionBySystem(t *testing.T) {
	ctx := t.Context()
	l := multiLayout(t)
	res, err := image.BuildUnion(ctx, l, []string{"arm", "x86", "x86b"}, l, "union", multiOptions)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Images) != 2 || strings.Join(res.Images[0].Closures, " ") != "x86 x86b" || strings.Join(res.Images[1].Closures, " ") != "arm" {
		t.Fatalf("images %+v, want x86+x86b and arm", res.Images)
	}
	one, err := image.BuildUnion(ctx, l, []string{"x86", "x86b", "nosys"}, l, "one", image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(one.Images) != 1 || spec.PlatformString(one.Images[0].Platform) != "linux/amd64" || len(one.Images[0].Layers) != 6 {
		t.Errorf("closures of one system and one without: %+v, want one linux/amd64 image of 5 paths", one.Images)
	}
}

// TestBuildPlatformsBadInput: closures that cannot make an index, or
// options they cannot take, are errors naming the closures, and nothing
// is tagged.
func TestBuildPlatformsBadInput(t *testing.T) {
	l := multiLayout(t)
	arm64 := ocispec.Platform{OS: "linux", Architecture: "arm64"}
	for _, tc := range []struct {
		name   string
		refs   []string
		opts   image.Options
		union  bool
		target error
		want   string
	}{
		{"same closure twice", []string{"x86", "x86"}, image.Options{}, false, image.ErrSameClosure, "closures x86 and x86"},
		{"two closures of one system", []string{"x86", "x86b"}, image.Options{}, false, image.ErrSameSystem, "x86 and x86b are both x86_64-linux"},
		{"a closure without system", []string{"x86", "nosys"}, image.Options{}, false, image.ErrNoSystem, "closure nosys"},
		{"a closure without system in a union", []string{"x86", "arm", "nosys"}, image.Options{}, true, image.ErrNoSystem, "closure nosys"},
		{"a mixed closure", []string{"mixed"}, image.Options{}, false, image.ErrMixedSystems, "aarch64-linux (" + fixture.BaseName("lib-arm") + "), x86_64-linux"},
		{"a mixed closure among others", []string{"arm", "mixed"}, image.Options{}, false, image.ErrMixedSystems, "closure mixed"},
		{"darwin", []string{"mac"}, image.Options{}, false, image.ErrNoPlatform, "aarch64-darwin"},
		{"darwin among others", []string{"x86", "mac"}, image.Options{}, false, image.ErrNoPlatform, "closure mac"},
		{"a platform no closure is for", []string{"x86", "arm"}, image.Options{Platforms: []ocispec.Platform{{OS: "linux", Architecture: "riscv64"}}}, false,
			image.ErrNoSuchPlatform, "linux/riscv64: no closure for the platform (the closures are for linux/amd64, linux/arm64)"},
		{"a link root in no closure", []string{"x86", "arm"}, image.Options{LinkRoots: []string{fixture.StorePath("app-nosys")}}, false,
			image.ErrOutsideClosure, "not in the closure of x86, arm"},
		{"an entrypoint in one platform only", []string{"x86", "arm"}, image.Options{Entrypoint: []string{fixture.StorePath("app-x86") + "/bin/run"}}, false,
			image.ErrOutsideClosure, "entrypoint of the linux/arm64 image of arm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			build := image.BuildPlatforms
			if tc.union {
				build = image.BuildUnion
			}
			_, err := build(t.Context(), l, tc.refs, l, "bad", tc.opts)
			if !errors.Is(err, tc.target) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %v containing %q", err, tc.target, tc.want)
			}
		})
	}
	var opt *image.OptionError
	if _, err := image.BuildPlatforms(t.Context(), l, []string{"x86"}, l, "bad", image.Options{Platforms: []ocispec.Platform{arm64, arm64}}); !errors.As(err, &opt) || opt.Option != "Platforms" {
		t.Errorf("two platforms for one closure: %v, want an OptionError for Platforms", err)
	}
	if _, err := l.Resolve(t.Context(), "bad"); err == nil {
		t.Error("a bad build tagged an image")
	}
}

// TestBuildOnePlatform: one closure's image is labelled with its
// system's platform, or the one asked for (a cross-compiled closure),
// even if its paths disagree.
func TestBuildOnePlatform(t *testing.T) {
	l := multiLayout(t)
	for _, tc := range []struct {
		ref  string
		opts image.Options
		want string
	}{
		{"arm", image.Options{}, "linux/arm64"},
		{"x86", image.Options{Platforms: []ocispec.Platform{{OS: "linux", Architecture: "arm", Variant: "v7"}}}, "linux/arm/v7"},
		{"mixed", image.Options{Platforms: []ocispec.Platform{{OS: "linux", Architecture: "amd64"}}}, "linux/amd64"},
	} {
		res, err := image.Build(t.Context(), l, tc.ref, l, "img-"+tc.ref, tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		data, err := backend.FetchAll(t.Context(), l, res.Images[0].Config, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		var cfg ocispec.Image
		if err := json.Unmarshal(data, &cfg); err != nil {
			t.Fatal(err)
		}
		if got := spec.PlatformString(cfg.Platform); got != tc.want || res.Manifest.MediaType != ocispec.MediaTypeImageManifest {
			t.Errorf("image of %s with %v: config platform %s (%s), want %s in an image manifest", tc.ref, tc.opts.Platforms, got, res.Manifest.MediaType, tc.want)
		}
	}
}

// layoutWalk checks that everything ref names in l is stored: every
// manifest and blob, through indexes.
func layoutWalk(t *testing.T, l *backend.Layout, ref string) {
	t.Helper()
	ctx := t.Context()
	desc, data, err := backend.FetchManifest(ctx, l, ref)
	if err != nil {
		t.Fatalf("%s: %v", ref, err)
	}
	var walk func(d ocispec.Descriptor, data []byte)
	walk = func(d ocispec.Descriptor, data []byte) {
		succ, err := backend.Successors(d, data)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range succ {
			b, err := backend.FetchAll(ctx, l, s, 64<<20)
			if err != nil {
				t.Errorf("%s: %s %s is not in the destination: %v", ref, s.MediaType, s.Digest, err)
				continue
			}
			if backend.IsManifest(s.MediaType) {
				walk(s, b)
			}
		}
	}
	walk(desc, data)
}

// TestBuildPlatformsFrom: closures in two different targets (per-system
// layouts) make the same index as from one target, with every layer in
// the destination and nothing written to the sources; a layer an image
// made in a source left there is copied, not converted again.
func TestBuildPlatformsFrom(t *testing.T) {
	ctx := t.Context()
	amd, arm := fixture.Layout(t), fixture.Layout(t)
	fixture.SystemClosure(t, amd, "x86", fixture.SystemPath{Name: "app-x86", System: "x86_64-linux"}, fixture.SystemPath{Name: "lib-x86", System: "x86_64-linux"}, fixture.SystemPath{Name: "shared", System: ""})
	fixture.SystemClosure(t, arm, "arm", fixture.SystemPath{Name: "app-arm", System: "aarch64-linux"}, fixture.SystemPath{Name: "shared", System: ""}, fixture.SystemPath{Name: "src", System: spec.SystemBuiltin})
	opts := multiOptions
	opts.NixSnapshotter = true
	sources := []image.Source{{Target: amd, Ref: "x86", Name: "amd:x86"}, {Target: arm, Ref: "arm", Name: "arm:arm"}}
	amdFiles, armFiles := fixture.FileDigests(t, amd.Dir()), fixture.FileDigests(t, arm.Dir())

	dst := fixture.Layout(t)
	res, err := image.BuildPlatformsFrom(ctx, sources, dst, "multi", opts)
	if err != nil {
		t.Fatal(err)
	}
	// The same closures from one target make the same index.
	one := fixture.Layout(t)
	fixture.SystemClosure(t, one, "x86", fixture.SystemPath{Name: "app-x86", System: "x86_64-linux"}, fixture.SystemPath{Name: "lib-x86", System: "x86_64-linux"}, fixture.SystemPath{Name: "shared", System: ""})
	fixture.SystemClosure(t, one, "arm", fixture.SystemPath{Name: "app-arm", System: "aarch64-linux"}, fixture.SystemPath{Name: "shared", System: ""}, fixture.SystemPath{Name: "src", System: spec.SystemBuiltin})
	want, err := image.BuildPlatforms(ctx, one, []string{"x86", "arm"}, one, "multi", opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest.Digest != want.Manifest.Digest || res.Converted != 5 {
		t.Errorf("index %s, %d layers converted; want %s (from one target) and 5", res.Manifest.Digest, res.Converted, want.Manifest.Digest)
	}
	if got := res.Images[1].Closures; len(got) != 1 || got[0] != "arm:arm" {
		t.Errorf("the arm64 image's closures are named %v", got)
	}
	layoutWalk(t, dst, "multi")
	layoutWalk(t, dst, "multi-nix")
	if !maps.Equal(amdFiles, fixture.FileDigests(t, amd.Dir())) || !maps.Equal(armFiles, fixture.FileDigests(t, arm.Dir())) {
		t.Error("building from the sources wrote to them")
	}

	// An image of the x86 closure made in its own layout leaves layer
	// artifacts there: the next image elsewhere copies them.
	alone := opts
	alone.LinkRoots = []string{fixture.StorePath("app-x86")}
	if _, err := image.Build(ctx, amd, "x86", amd, "img", alone); err != nil {
		t.Fatal(err)
	}
	dst2 := fixture.Layout(t)
	again, err := image.BuildPlatformsFrom(ctx, sources, dst2, "multi", opts)
	if err != nil {
		t.Fatal(err)
	}
	if again.Manifest.Digest != res.Manifest.Digest || again.Converted != 2 || again.Reused != 3 {
		t.Errorf("with x86's layers in its layout: index %s, converted %d, reused %d; want %s, 2 (arm's own paths) and 3 (copied)",
			again.Manifest.Digest, again.Converted, again.Reused, res.Manifest.Digest)
	}
	layoutWalk(t, dst2, "multi")
	for _, name := range []string{"app-x86", "lib-x86", "shared"} {
		tag := spec.LayerTag([]string{spec.PathTag(fixture.StorePath(name))}, spec.LayerGzip)
		if _, err := dst2.Resolve(ctx, tag); err != nil {
			t.Errorf("layer artifact %s of %s not copied: %v", tag, name, err)
		}
	}
}
