package conformance

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/spec"
)

// multiArch is a layout holding an x86_64-linux fixture closure pushed
// from the local store (tag hello-x86_64) and an aarch64-linux closure
// with Debian's arm64 busybox imported from a binary cache
// (hello-aarch64).
type multiArch struct {
	fx        testenv.Fixture
	arm       testenv.ForeignFixture
	layoutDir string
	layout    string
}

func newMultiArch(t *testing.T, salt string) multiArch {
	t.Helper()
	m := multiArch{fx: testenv.BuildFixture(t, salt), arm: testenv.BuildForeignCache(t, "arm64", salt)}
	m.layoutDir = filepath.Join(t.TempDir(), "l")
	m.layout = "oci:" + m.layoutDir
	run(t, "push", "--to", m.layout+":hello-x86_64", m.fx.App)
	run(t, "push", "--to", m.layout+":hello-aarch64", "--from-cache", "file://"+m.arm.CacheDir, m.arm.App)
	return m
}

// imageFlags are the flags of the image both closures make: each app
// linked, /bin/app run.
func (m multiArch) imageFlags() []string {
	return []string{"--link-root", m.fx.App, "--link-root", m.arm.App, "--entrypoint", "/bin/app"}
}

// rawIndex parses what `skopeo inspect --raw` printed as an image index
// and lists its platforms; it fails unless it is one.
func rawIndex(t *testing.T, raw string) (ocispec.Index, []string) {
	t.Helper()
	var idx ocispec.Index
	if err := json.Unmarshal([]byte(raw), &idx); err != nil || idx.MediaType != ocispec.MediaTypeImageIndex {
		t.Fatalf("not an OCI image index (%v):\n%s", err, raw)
	}
	var platforms []string
	for _, d := range idx.Manifests {
		if d.Platform == nil {
			t.Fatalf("index entry %s has no platform", d.Digest)
		}
		platforms = append(platforms, d.Platform.OS+"/"+d.Platform.Architecture)
	}
	return idx, platforms
}

func sha256Digest(data string) string {
	sum := sha256.Sum256([]byte(data))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// checkArm64Image unpacks an image from a layout with umoci (runc cannot
// run it here: binfmt_misc is not mounted) and checks it holds the
// aarch64 closure, its busybox an aarch64 ELF, and none of the x86 one.
func checkArm64Image(t *testing.T, m multiArch, layoutDir, tag string) {
	t.Helper()
	inspect := testenv.Run(t, "skopeo", "inspect", "oci:"+layoutDir+":"+tag)
	var info struct{ Architecture, Os string }
	if err := json.Unmarshal([]byte(inspect), &info); err != nil || info.Architecture != "arm64" || info.Os != "linux" {
		t.Errorf("skopeo inspect of the arm64 image: %v\n%s", err, inspect)
	}
	bundle := filepath.Join(t.TempDir(), "bundle")
	testenv.Run(t, "umoci", "unpack", "--image", layoutDir+":"+tag, bundle)
	rootfs := filepath.Join(bundle, "rootfs")
	bb := filepath.Join(rootfs, m.arm.Busybox, "bin", "busybox")
	if machine, err := testenv.ELFMachine(bb); err != nil || machine != elf.EM_AARCH64 {
		t.Errorf("%s in the arm64 image: %v (%v), want an aarch64 ELF", m.arm.Busybox+"/bin/busybox", machine, err)
	}
	if target, err := os.Readlink(filepath.Join(rootfs, "bin", "app")); err != nil || target != m.arm.App+"/bin/app" {
		t.Errorf("/bin/app in the arm64 image links to %q (%v), want %s/bin/app", target, err, m.arm.App)
	}
	for _, p := range m.fx.Closure {
		if _, err := os.Lstat(filepath.Join(rootfs, p)); err == nil {
			t.Errorf("the arm64 image holds %s of the x86_64 closure", p)
		}
	}
}

// TestMultiArchImage: closures of x86_64-linux (pushed from the local
// store, system from the .drv) and aarch64-linux (from a binary cache,
// system from the narinfo) make one image index; skopeo sees both
// platforms, the amd64 image runs with umoci + runc, the arm64 one holds
// an aarch64 busybox; the index is reproducible, each entry is the image
// of its closure alone, and --platform picks one.
func TestMultiArchImage(t *testing.T) {
	m := newMultiArch(t, "multiarch")
	for tag, system := range map[string]string{"hello-x86_64": "x86_64-linux", "hello-aarch64": "aarch64-linux"} {
		var s artifact.ClosureSummary
		if err := json.Unmarshal([]byte(run(t, "inspect", "--json", m.layout+":"+tag)), &s); err != nil {
			t.Fatal(err)
		}
		for _, p := range s.Paths {
			if p.System != system {
				t.Errorf("%s: %s records system %q, want %s", tag, p.StorePath, p.System, system)
			}
		}
		mustContain(t, "inspect "+tag, run(t, "inspect", m.layout+":"+tag), fmt.Sprintf("systems  %s %d\n", system, len(s.Paths)))
	}

	cmd := nixoci(t, append([]string{"image", "--from", m.layout + ":hello-x86_64", "--from", m.layout + ":hello-aarch64",
		"--to", m.layout + ":multi", "--nix-snapshotter"}, m.imageFlags()...)...)
	stdout, stderr, err := testenv.RunCmdErr(cmd)
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "image output", stderr, "image index", "2 platforms", "linux/amd64", "linux/arm64", "aarch64-linux")
	digest := lastLine(stdout)

	raw := testenv.Run(t, "skopeo", "inspect", "--raw", "oci:"+m.layoutDir+":multi")
	idx, platforms := rawIndex(t, raw)
	if strings.Join(platforms, " ") != "linux/amd64 linux/arm64" || sha256Digest(raw) != digest {
		t.Errorf("index platforms %v, digest %s; want linux/amd64 linux/arm64 and %s", platforms, sha256Digest(raw), digest)
	}
	if _, nixPlatforms := rawIndex(t, testenv.Run(t, "skopeo", "inspect", "--raw", "oci:"+m.layoutDir+":multi-nix")); strings.Join(nixPlatforms, " ") != "linux/amd64 linux/arm64" {
		t.Errorf("nix-snapshotter index platforms %v", nixPlatforms)
	}

	amd := filepath.Join(t.TempDir(), "amd")
	testenv.Run(t, "skopeo", "copy", "--override-arch", "amd64", "oci:"+m.layoutDir+":multi", "oci:"+amd+":img")
	if got := runImage(t, amd, "img"); got+"\n" != m.fx.Message {
		t.Errorf("the amd64 image printed %q, want %q", got, m.fx.Message)
	}
	arm := filepath.Join(t.TempDir(), "arm")
	testenv.Run(t, "skopeo", "copy", "--override-arch", "arm64", "oci:"+m.layoutDir+":multi", "oci:"+arm+":img")
	checkArm64Image(t, m, arm, "img")

	// The closures in the other order give the same index, converting
	// nothing; each entry is the image of its closure alone.
	cmd = nixoci(t, append([]string{"image", "--from", m.layout + ":hello-aarch64", "--from", m.layout + ":hello-x86_64",
		"--to", m.layout + ":again"}, m.imageFlags()...)...)
	stdout, stderr, err = testenv.RunCmdErr(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if lastLine(stdout) != digest || !strings.Contains(stderr, "(0 layers converted") {
		t.Errorf("the same image with the closures reversed: %s, %q; want %s and nothing converted", lastLine(stdout), stderr, digest)
	}
	for i, c := range []struct{ tag, linkRoot string }{{"hello-x86_64", m.fx.App}, {"hello-aarch64", m.arm.App}} {
		alone := lastLine(run(t, "image", "--from", m.layout+":"+c.tag, "--to", m.layout+":alone-"+c.tag, "--link-root", c.linkRoot, "--entrypoint", "/bin/app"))
		if alone != idx.Manifests[i].Digest.String() {
			t.Errorf("%s entry %s, the image of %s alone %s", platforms[i], idx.Manifests[i].Digest, c.tag, alone)
		}
	}

	// --platform keeps one: a plain image, the index's arm64 entry.
	picked := lastLine(run(t, append([]string{"image", "--from", m.layout + ":hello-x86_64", "--from", m.layout + ":hello-aarch64",
		"--to", m.layout + ":arm-only", "--platform", "linux/arm64"}, m.imageFlags()...)...))
	rawArm := testenv.Run(t, "skopeo", "inspect", "--raw", "oci:"+m.layoutDir+":arm-only")
	if picked != idx.Manifests[1].Digest.String() || !strings.Contains(rawArm, ocispec.MediaTypeImageManifest) {
		t.Errorf("--platform linux/arm64: %s, want the plain manifest %s", picked, idx.Manifests[1].Digest)
	}
}

// TestMultiArchRegistries: the index pushed to docker-registry is what
// crane and oras fetch and skopeo copies by platform; `serve --registry`
// answers a names entry of both closures with the same index, and a
// single-system name with a plain manifest; closures in repositories of
// two registries (docker-registry, distribution 3) make the same index,
// whose amd64 image runs under runc.
func TestMultiArchRegistries(t *testing.T) {
	m := newMultiArch(t, "multiarchreg")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	ref := reg.Ref("images/hello") + ":multi"
	digest := lastLine(run(t, append([]string{"image", "--from", m.layout + ":hello-x86_64", "--from", m.layout + ":hello-aarch64",
		"--to", ref}, m.imageFlags()...)...))

	craneRaw := testenv.Run(t, "crane", "manifest", "--insecure", ref)
	orasRaw := oras(t, "manifest", "fetch", "--plain-http", ref)
	_, platforms := rawIndex(t, craneRaw)
	if strings.Join(platforms, " ") != "linux/amd64 linux/arm64" || craneRaw != orasRaw || sha256Digest(craneRaw) != digest {
		t.Errorf("crane fetched platforms %v (digest %s), oras the same bytes: %v; want linux/amd64 linux/arm64, %s",
			platforms, sha256Digest(craneRaw), craneRaw == orasRaw, digest)
	}
	amd := filepath.Join(t.TempDir(), "amd")
	testenv.Run(t, "skopeo", "copy", "--src-tls-verify=false", "--override-arch", "amd64", "docker://"+ref, "oci:"+amd+":img")
	if got := runImage(t, amd, "img"); got+"\n" != m.fx.Message {
		t.Errorf("the amd64 image from the registry printed %q, want %q", got, m.fx.Message)
	}
	arm := filepath.Join(t.TempDir(), "arm")
	testenv.Run(t, "skopeo", "copy", "--src-tls-verify=false", "--override-arch", "arm64", "docker://"+ref, "oci:"+arm+":img")
	checkArm64Image(t, m, arm, "img")

	// nixoci copy carries an index with its images' paths and layers
	// (from the layout holding the closures too), or, from a repository
	// holding only the images, the images alone.
	run(t, append([]string{"image", "--from", m.layout + ":hello-x86_64", "--from", m.layout + ":hello-aarch64",
		"--to", m.layout + ":multi"}, m.imageFlags()...)...)
	out := run(t, "copy", "--json", m.layout+":multi", reg.Ref("copied"))
	if !strings.Contains(out, `"kind": "image index"`) {
		t.Errorf("nixoci copy of the index: %s", out)
	}
	if tags := registryTags(t, reg.Ref("copied"), "--plain-http"); !contains(tags, spec.PathTag(m.fx.App)) || !contains(tags, spec.PathTag(m.arm.App)) {
		t.Errorf("the copy lacks the path tags of both closures: %v", tags)
	}
	copied := filepath.Join(t.TempDir(), "copied")
	testenv.Run(t, "skopeo", "copy", "--src-tls-verify=false", "--override-arch", "amd64", "docker://"+reg.Ref("copied")+":multi", "oci:"+copied+":img")
	if got := runImage(t, copied, "img"); got+"\n" != m.fx.Message {
		t.Errorf("the amd64 image of the copy printed %q, want %q", got, m.fx.Message)
	}
	if out := run(t, "copy", "--json", ref, reg.Ref("images-only")); !strings.Contains(out, `"pathsElsewhere"`) {
		t.Errorf("copy of an index whose closures live elsewhere: %s", out)
	}

	// On demand: a names entry listing the closures of both systems.
	names := filepath.Join(t.TempDir(), "names.json")
	spec, _ := json.Marshal(map[string]any{"hello": map[string]any{
		"closures": []string{"hello-x86_64", "hello-aarch64"}, "linkRoots": []string{m.fx.App, m.arm.App}, "entrypoint": []string{"/bin/app"}}})
	os.WriteFile(names, spec, 0o644)
	srv := startServe(t, nil, "--from", m.layout, "--registry", "--names", names)
	host := strings.TrimPrefix(srv.URL, "http://")
	served := testenv.Run(t, "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+host+"/hello:latest")
	if _, p := rawIndex(t, served); strings.Join(p, " ") != "linux/amd64 linux/arm64" || sha256Digest(served) != digest {
		t.Errorf("served index: platforms %v, digest %s; want linux/amd64 linux/arm64 and the index nixoci image made, %s", p, sha256Digest(served), digest)
	}
	amdServed := filepath.Join(t.TempDir(), "amd-served")
	testenv.Run(t, "skopeo", "copy", "--src-tls-verify=false", "--override-arch", "amd64", "docker://"+host+"/hello:latest", "oci:"+amdServed+":img")
	if got := runImage(t, amdServed, "img"); got+"\n" != m.fx.Message {
		t.Errorf("the served amd64 image printed %q, want %q", got, m.fx.Message)
	}
	armServed := filepath.Join(t.TempDir(), "arm-served")
	testenv.Run(t, "skopeo", "copy", "--src-tls-verify=false", "--override-arch", "arm64", "docker://"+host+"/hello:latest", "oci:"+armServed+":img")
	checkArm64Image(t, m, armServed, "img")

	single := testenv.Run(t, "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+host+"/hello-aarch64:latest")
	if !strings.Contains(single, `"mediaType":"`+ocispec.MediaTypeImageManifest+`"`) {
		t.Errorf("a single-system name is not a plain image manifest:\n%s", single)
	}

	// Per-system caches (issue 22): the x86_64 closure in a repository of
	// this registry, the aarch64 one in a repository of another registry
	// (distribution 3); the image, written to a third repository, is the
	// same index, holds every layer, and runs.
	other := testenv.StartRegistry(t, testenv.RegistryOptions{Program: "registry"})
	x86, arm := reg.Ref("nix-x86_64")+":hello", other.Ref("nix-aarch64")+":hello"
	run(t, "copy", m.layout+":hello-x86_64", x86)
	run(t, "copy", m.layout+":hello-aarch64", arm)
	two := reg.Ref("images/two") + ":multi"
	cmd := nixoci(t, append([]string{"image", "--from", x86, "--from", arm, "--to", two}, m.imageFlags()...)...)
	stdout, stderr, err := testenv.RunCmdErr(cmd)
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "image from two registries", stderr, "linux/amd64", "from "+x86, "linux/arm64", "from "+arm)
	if got := lastLine(stdout); got != digest {
		t.Errorf("the index from two registries is %s, from one layout %s", got, digest)
	}
	amdTwo := filepath.Join(t.TempDir(), "amd-two")
	testenv.Run(t, "skopeo", "copy", "--src-tls-verify=false", "--override-arch", "amd64", "docker://"+two, "oci:"+amdTwo+":img")
	if got := runImage(t, amdTwo, "img"); got+"\n" != m.fx.Message {
		t.Errorf("the amd64 image of closures in two registries printed %q, want %q", got, m.fx.Message)
	}
	armTwo := filepath.Join(t.TempDir(), "arm-two")
	testenv.Run(t, "skopeo", "copy", "--src-tls-verify=false", "--override-arch", "arm64", "docker://"+two, "oci:"+armTwo+":img")
	checkArm64Image(t, m, armTwo, "img")
}

// TestMultiArchBadInput: two closures of one system, one given twice, a
// closure recording no system (a local store path without a deriver)
// among others, and a closure whose paths record two systems are clear
// errors, and no image is tagged.
func TestMultiArchBadInput(t *testing.T) {
	m := newMultiArch(t, "multiarchbad")
	other := testenv.BuildFixture(t, "multiarchbad-other")
	run(t, "push", "--to", m.layout+":other-x86_64", other.App)

	// A path added to the local store, so with no deriver, records no
	// system when pushed.
	tree := filepath.Join(t.TempDir(), "fx-nosys-multiarchbad")
	os.MkdirAll(filepath.Join(tree, "share"), 0o755)
	os.WriteFile(filepath.Join(tree, "share", "data"), []byte("no system\n"), 0o644)
	nosys := testenv.Run(t, "nix-store", "--add", tree)
	run(t, "push", "--to", m.layout+":nosys", nosys)
	mustContain(t, "inspect of a path without a deriver", run(t, "inspect", m.layout+":nosys"), "systems  none 1\n")

	// A closure whose narinfos record two systems, from a real Nix cache.
	lib := testenv.BuildDerivation(t, "fx-lib-multiarchbad", `echo lib > $out`)
	app := testenv.BuildDerivation(t, "fx-app-multiarchbad", `echo $ref0 > $out`, lib)
	cache := t.TempDir()
	testenv.Run(t, "nix", "copy", "--to", "file://"+cache, app)
	for path, system := range map[string]string{app: "aarch64-linux", lib: "x86_64-linux"} {
		file := filepath.Join(cache, strings.SplitN(filepath.Base(path), "-", 2)[0]+".narinfo")
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(file, append(data, "System: "+system+"\n"...), 0o644)
	}
	_, pushErr, err := testenv.RunCmdErr(nixoci(t, "push", "--to", m.layout+":mixed", "--from-cache", "file://"+cache, app))
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "push of a closure of two systems", pushErr, "different systems", "aarch64-linux", "x86_64-linux")

	from := func(tags ...string) []string {
		args := []string{"image", "--to", m.layout + ":bad"}
		for _, tag := range tags {
			args = append(args, "--from", m.layout+":"+tag)
		}
		return args
	}
	for _, tc := range []struct {
		name  string
		args  []string
		wants []string
	}{
		{"two closures of one system", from("hello-x86_64", "other-x86_64"), []string{"hello-x86_64 and other-x86_64 are both x86_64-linux", "two closures of one system"}},
		{"one closure twice", from("hello-aarch64", "hello-aarch64"), []string{"closure given twice"}},
		{"a closure without a system", from("hello-aarch64", "nosys"), []string{"closure nosys: no path records its system", "--platform"}},
		{"a closure of two systems", from("mixed"), []string{"closure mixed: paths record different systems: aarch64-linux", "x86_64-linux", "--platform"}},
		{"a closure of two systems among others", from("hello-x86_64", "mixed"), []string{"closure mixed: paths record different systems"}},
	} {
		stderr, code := runFail(t, tc.args...)
		if code != 1 {
			t.Errorf("%s: exit code %d, want 1", tc.name, code)
		}
		mustContain(t, tc.name, stderr, tc.wants...)
	}
	if contains(layoutTags(t, m.layoutDir), "bad") {
		t.Error("an image was tagged after bad input")
	}
}
