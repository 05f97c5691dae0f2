package conformance

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/spec"
)

// checkServesAndBuilds: the closure tagged tag at target substitutes into
// an empty store with the real Nix through nixoci serve, reads with
// inspect, pulls as a binary cache with oras, and makes an image runc
// runs.
func checkServesAndBuilds(t *testing.T, fx testenv.Fixture, key testenv.KeyPair, target, tag string, orasFlags ...string) {
	t.Helper()
	srv := startServe(t, nil, "--from", target)
	store, stderr, err := realise(t, srv.URL, key.Public, fx.App)
	if err != nil {
		t.Fatalf("nix-store --realise through serve --from %s: %v\n%s", target, err, stderr)
	}
	for _, p := range fx.Closure {
		testenv.TreesEqual(t, p, filepath.Join(store, p))
	}
	mustContain(t, "inspect", run(t, "inspect", target+":"+tag), fx.Busybox, fx.Data)

	if len(orasFlags) > 0 {
		dir := t.TempDir()
		oras(t, append([]string{"pull"}, append(orasFlags, target+":"+tag, "-o", dir)...)...)
		copyAndCompare(t, dir, key.Public, fx.App, fx.Closure)
	}

	imgDir := filepath.Join(t.TempDir(), "img")
	run(t, "image", "--from", target+":"+tag, "--to", "oci:"+imgDir+":img",
		"--entrypoint", fx.App+"/bin/app", "--link-root", fx.Busybox)
	if got := runImage(t, imgDir, "img"); got+"\n" != fx.Message {
		t.Errorf("image of %s:%s printed %q, want %q", target, tag, got, fx.Message)
	}
}

// TestClosuresTravelWithOCITools: a closure copied by its tag alone with
// the real oras copy, crane copy and oras cp --from-oci-layout is fully
// usable at the destination: no path tags travel, and serve, inspect,
// oras pull and image work from what did.
func TestClosuresTravelWithOCITools(t *testing.T) {
	fx := testenv.BuildFixture(t, "travel")
	key := testenv.GenerateKey(t, "travel-1")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	layoutDir := filepath.Join(t.TempDir(), "l")
	run(t, "push", "--to", reg.Ref("a")+":app", "--sign-key", key.SecretFile, fx.App)
	run(t, "push", "--to", "oci:"+layoutDir+":app", "--sign-key", key.SecretFile, fx.App)

	crane := testenv.Tool(t, "crane")
	oras(t, "copy", "--from-plain-http", "--to-plain-http", reg.Ref("a")+":app", reg.Ref("b")+":app")
	testenv.Run(t, crane, "copy", "--insecure", reg.Ref("a")+":app", reg.Ref("c")+":app")
	oras(t, "cp", "--from-oci-layout", layoutDir+":app", "--to-plain-http", reg.Ref("d")+":app")

	for _, dest := range []string{"b", "c", "d"} {
		t.Run(dest, func(t *testing.T) {
			ref := reg.Ref(dest)
			if tags := registryTags(t, ref, "--plain-http"); contains(tags, spec.PathTag(fx.App)) {
				t.Fatalf("the copy to %s carried path tags %v; this test is about copies that do not", dest, tags)
			}
			checkServesAndBuilds(t, fx, key, ref, "app", "--plain-http")
		})
	}
}

// TestNixociCopy: nixoci copy from a layout to a registry, between two
// registries and from a registry to a layout leaves a destination that
// substitutes and builds images; within one registry blobs are mounted,
// not uploaded, and a second copy uploads nothing.
func TestNixociCopy(t *testing.T) {
	fx := testenv.BuildFixture(t, "ncopy")
	key := testenv.GenerateKey(t, "ncopy-1")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	reg2 := testenv.StartRegistry(t, testenv.RegistryOptions{})
	layoutDir := filepath.Join(t.TempDir(), "l")
	run(t, "push", "--to", "oci:"+layoutDir+":app", "--sign-key", key.SecretFile, fx.App)

	run(t, "copy", "oci:"+layoutDir+":app", reg.Ref("from-layout"))
	run(t, "copy", reg.Ref("from-layout")+":app", reg2.Ref("other")+":promoted")
	back := filepath.Join(t.TempDir(), "back")
	run(t, "copy", reg2.Ref("other")+":promoted", "oci:"+back+":app")
	for name, target := range map[string][2]string{
		"layout-to-registry":   {reg.Ref("from-layout"), "app"},
		"registry-to-registry": {reg2.Ref("other"), "promoted"},
		"registry-to-layout":   {"oci:" + back, "app"},
	} {
		t.Run(name, func(t *testing.T) {
			if name != "registry-to-layout" {
				if tags := registryTags(t, target[0], "--plain-http"); !contains(tags, spec.PathTag(fx.App)) {
					t.Errorf("nixoci copy wrote no path tags: %v", tags)
				}
			}
			checkServesAndBuilds(t, fx, key, target[0], target[1])
		})
	}

	// Within one registry, through a proxy that logs every request.
	proxy := testenv.StartFaultProxy(t, reg.Addr, testenv.FaultOptions{})
	out := run(t, "copy", "--json", proxy.Ref("from-layout")+":app", proxy.Ref("promoted"))
	var res struct {
		Copied, Mounted, Tagged int
		CopiedBytes             int64
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("copy --json: %v\n%s", err, out)
	}
	var mounts, uploads int
	for _, r := range proxy.Log() {
		switch {
		case r.Method == "POST" && strings.Contains(r.RawQuery, "mount="):
			mounts++
		case r.Method == "PATCH", r.Method == "PUT" && strings.Contains(r.Path, "/blobs/uploads/"):
			uploads++
		}
	}
	if mounts < len(fx.Closure)*2 || uploads > 1 || res.Mounted < len(fx.Closure)*2 {
		t.Errorf("copy within one registry: %d mount requests, %d blob uploads, result %+v; want every NAR and narinfo mounted and at most the nix-cache-info blob uploaded", mounts, uploads, res)
	}
	checkServesAndBuilds(t, fx, key, reg.Ref("promoted"), "app")

	before := len(proxy.Log())
	run(t, "copy", proxy.Ref("from-layout")+":app", proxy.Ref("promoted"))
	for _, r := range proxy.Log()[before:] {
		if r.Method != "GET" && r.Method != "HEAD" {
			t.Errorf("second copy wrote: %s %s", r.Method, r.Path)
		}
	}
}

// TestNixociCopyBadInput: a plain image is refused with a clear error;
// a destination that refuses writes is left without the closure tag.
func TestNixociCopyBadInput(t *testing.T) {
	fx := testenv.BuildFixture(t, "ncopybad")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	run(t, "push", "--to", reg.Ref("src")+":app", fx.App)

	// A plain image (umoci's empty image, copied in with skopeo).
	plainDir := filepath.Join(t.TempDir(), "plain")
	testenv.Run(t, "umoci", "init", "--layout", plainDir)
	testenv.Run(t, "umoci", "new", "--image", plainDir+":plain")
	testenv.Run(t, "skopeo", "copy", "--dest-tls-verify=false", "oci:"+plainDir+":plain", "docker://"+reg.Ref("src")+":plain")
	stderr, code := runFail(t, "copy", reg.Ref("src")+":plain", reg.Ref("dst"))
	if code != 1 || !strings.Contains(stderr, "not a nixoci closure") || !strings.Contains(stderr, "oras copy") {
		t.Errorf("copying a plain image: exit %d, %q", code, stderr)
	}

	// A destination whose credentials the registry refuses.
	locked := testenv.StartRegistry(t, testenv.RegistryOptions{User: "owner", Password: "owner-pw-3"})
	stderr, code = runFail(t, "copy", reg.Ref("src")+":app", locked.Ref("dst"))
	if code != 1 || !strings.Contains(stderr, "refused authentication") {
		t.Errorf("copy to a registry refusing us: exit %d, %q", code, stderr)
	}
	if strings.Contains(stderr, "owner-pw-3") {
		t.Error("the password appears in the error")
	}
}

// TestMixedRepository: one repository holding a version 1 closure, a
// version 2 closure, and copies of both made with oras copy (one of them
// from another repository, so its paths have no tags here): every closure
// substitutes with the real Nix, pulls with oras as a binary cache, and
// builds an image that runs.
func TestMixedRepository(t *testing.T) {
	v1 := testenv.BuildFixture(t, "mixedv1")
	v2 := testenv.BuildFixture(t, "mixedv2")
	other := testenv.BuildFixture(t, "mixedother")
	key := testenv.GenerateKey(t, "mixed-1")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	repo := reg.Ref("mixed")
	run(t, "push", "--to", repo+":a1", "--closure-version", "1", "--sign-key", key.SecretFile, v1.App)
	run(t, "push", "--to", repo+":b2", "--sign-key", key.SecretFile, v2.App)
	run(t, "push", "--to", reg.Ref("elsewhere")+":c", "--sign-key", key.SecretFile, other.App)
	oras(t, "copy", "--from-plain-http", "--to-plain-http", repo+":a1", repo+":a1-copy")
	oras(t, "copy", "--from-plain-http", "--to-plain-http", repo+":b2", repo+":b2-copy")
	oras(t, "copy", "--from-plain-http", "--to-plain-http", reg.Ref("elsewhere")+":c", repo+":c-copy")

	for tag, fx := range map[string]testenv.Fixture{"a1": v1, "a1-copy": v1, "b2": v2, "b2-copy": v2, "c-copy": other} {
		t.Run(tag, func(t *testing.T) {
			checkServesAndBuilds(t, fx, key, repo, tag, "--plain-http")
		})
	}
}
