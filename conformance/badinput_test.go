package conformance

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/spec"
)

// narTokens builds a NAR from raw tokens, so tests can write archives
// that no correct writer produces.
func narTokens(tokens ...string) []byte {
	var b bytes.Buffer
	for _, s := range tokens {
		binary.Write(&b, binary.LittleEndian, uint64(len(s)))
		b.WriteString(s)
		b.Write(make([]byte, (8-len(s)%8)%8))
	}
	return b.Bytes()
}

// expectNoTags fails unless the layout has no tag from the list.
func expectNoTags(t *testing.T, layoutDir string, tags ...string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(layoutDir, "index.json")); err != nil {
		return // nothing was written at all
	}
	got := layoutTags(t, layoutDir)
	for _, tag := range tags {
		if contains(got, tag) {
			t.Errorf("tag %s exists after a failed push (tags: %v)", tag, got)
		}
	}
}

func mustContain(t *testing.T, what, s string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(s, w) {
			t.Errorf("%s does not mention %q:\n%s", what, w, s)
		}
	}
}

// TestCorruptBlobOnPull: a blob corrupted in storage fails the pull with
// its digest named, and leaves no file that looks complete.
func TestCorruptBlobOnPull(t *testing.T) {
	fx := testenv.BuildFixture(t, "corruptpull")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	layoutDir := filepath.Join(t.TempDir(), "l")
	ref := reg.Ref("corrupt")
	run(t, "push", "--to", "oci:"+layoutDir+":c", fx.App)
	run(t, "push", "--to", ref+":c", fx.App)

	// The busybox NAR is the biggest blob; flip a byte in the stored copies.
	var narHex string
	for _, p := range []string{fx.Busybox} {
		manifest := oras(t, "manifest", "fetch", "--oci-layout", layoutDir+":"+spec.PathTag(p))
		i := strings.Index(manifest, `"digest":"sha256:`)
		i = strings.Index(manifest[i+1:], `"digest":"sha256:`) + i + 1 // skip the config
		narHex = manifest[i+len(`"digest":"sha256:`) : i+len(`"digest":"sha256:`)+64]
	}
	corrupt := func(path string) {
		t.Helper()
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		data[len(data)/2] ^= 0xff
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	corrupt(filepath.Join(layoutDir, "blobs", "sha256", narHex))
	corrupt(filepath.Join(reg.Dir, "docker", "registry", "v2", "blobs", "sha256", narHex[:2], narHex, "data"))

	for _, src := range []string{"oci:" + layoutDir + ":c", ref + ":c"} {
		out := t.TempDir()
		stderr, code := runFail(t, "pull", src, "--to", out)
		if code != 1 {
			t.Errorf("exit code %d, want 1", code)
		}
		mustContain(t, "pull error", stderr, "sha256:"+narHex, "corrupt")
		entries, _ := filepath.Glob(filepath.Join(out, "nar", "*"))
		for _, e := range entries {
			if strings.Contains(filepath.Base(e), ".part-") {
				t.Errorf("partial file left: %s", e)
			}
		}
		for _, name := range []string{"nix-cache-info", spec.PathTag(fx.Busybox) + ".narinfo"} {
			if _, err := os.Stat(filepath.Join(out, name)); err == nil {
				t.Errorf("%s written although a NAR failed", name)
			}
		}
	}
}

// TestNarHashMismatch: a store path whose content no longer matches the
// NarHash in Nix's database is refused; neither it nor the closure is
// tagged.
func TestNarHashMismatch(t *testing.T) {
	fx := testenv.BuildFixture(t, "narhashmismatch")
	msg := filepath.Join(fx.Data, "share", "msg")
	if err := os.Chmod(msg, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(msg, []byte("tampered\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	layoutDir := filepath.Join(t.TempDir(), "l")
	stderr, _ := runFail(t, "push", "--to", "oci:"+layoutDir+":mismatch", fx.App)
	mustContain(t, "push error", stderr, fx.Data, "hash mismatch")
	expectNoTags(t, layoutDir, "mismatch", spec.PathTag(fx.Data))
}

// TestBadCacheInput: what a binary cache serves is checked before
// anything is tagged.
func TestBadCacheInput(t *testing.T) {
	c := newSynthCache(t)
	good := synthStorePath("good")
	c.add(good, fileNAR(t, "good"), nil, nil)

	// A NAR whose bytes differ from its FileHash.
	corrupt := synthStorePath("corrupt-nar")
	info := c.add(corrupt, fileNAR(t, "corrupt"), []string{filepath.Base(good)}, nil)
	os.WriteFile(filepath.Join(c.dir, info.URL), fileNAR(t, "CORRUPT"), 0o644)

	// A narinfo whose NarHash is wrong (FileHash right).
	wrongHash := synthStorePath("wrong-narhash")
	c.add(wrongHash, fileNAR(t, "wrong"), nil, func(s string) string {
		i := strings.Index(s, "NarHash: sha256:")
		return s[:i+16] + "0000000000000000000000000000000000000000000000000000" + s[i+16+52:]
	})

	// NARs with entries that would escape a directory.
	traversal := synthStorePath("traversal")
	c.add(traversal, narTokens("nix-archive-1", "(", "type", "directory",
		"entry", "(", "name", "..", "node", "(", "type", "regular", "contents", "x", ")", ")", ")"), nil, nil)
	slash := synthStorePath("slash")
	c.add(slash, narTokens("nix-archive-1", "(", "type", "directory",
		"entry", "(", "name", "a/b", "node", "(", "type", "regular", "contents", "x", ")", ")", ")"), nil, nil)

	// A reference that is not a store path name.
	badRef := synthStorePath("bad-ref")
	c.add(badRef, fileNAR(t, "badref"), nil, func(s string) string {
		return strings.Replace(s, "References: ", "References: ../../etc/passwd", 1)
	})

	cases := []struct {
		name  string
		root  string
		wants []string
	}{
		{"corrupt NAR", corrupt, []string{corrupt, "FileHash", "hash mismatch"}},
		{"wrong NarHash", wrongHash, []string{wrongHash, "hash mismatch"}},
		{"entry named ..", traversal, []string{`".."`, "not allowed"}},
		{"entry with slash", slash, []string{`a/b`}},
		{"invalid reference", badRef, []string{"References", "../../etc/passwd"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			layoutDir := filepath.Join(t.TempDir(), "l")
			stderr, code := runFail(t, "push", "--from-cache", c.url(), "--to", "oci:"+layoutDir+":bad", tc.root)
			if code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			mustContain(t, "push error", stderr, tc.wants...)
			expectNoTags(t, layoutDir, "bad", spec.PathTag(tc.root))
		})
	}
}

// TestUnknownNarinfoKeyKept: unknown narinfo keys are accepted, kept
// through push and pull, and Nix still accepts the signed result.
func TestUnknownNarinfoKeyKept(t *testing.T) {
	fx := testenv.BuildFixture(t, "unknownkey")
	key := testenv.GenerateKey(t, "unknownkey-1")
	cache := t.TempDir()
	testenv.Run(t, "nix", "copy", "--to", "file://"+cache+"?secret-key="+key.SecretFile+"&compression=zstd", fx.App)
	narinfo := filepath.Join(cache, spec.PathTag(fx.App)+".narinfo")
	data, err := os.ReadFile(narinfo)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(narinfo, append(data, []byte("X-Future-Field: kept as is\n")...), 0o644)

	layout := "oci:" + filepath.Join(t.TempDir(), "l")
	run(t, "push", "--from-cache", "file://"+cache, "--to", layout+":k", fx.App)
	out := t.TempDir()
	run(t, "pull", layout+":k", "--to", out)
	got, _ := os.ReadFile(filepath.Join(out, spec.PathTag(fx.App)+".narinfo"))
	mustContain(t, "pulled narinfo", string(got), "X-Future-Field: kept as is\n")
	copyAndCompare(t, out, key.Public, fx.App, fx.Closure)
}

// TestInvalidTargets: malformed targets and tags are usage errors.
func TestInvalidTargets(t *testing.T) {
	fx := testenv.BuildFixture(t, "invalidref")
	for _, tc := range []struct {
		args  []string
		wants []string
	}{
		{[]string{"push", "--to", "Not A Registry/x", fx.App}, []string{"invalid target"}},
		{[]string{"push", "--to", "127.0.0.1:5000/UPPER", fx.App}, []string{"invalid target"}},
		{[]string{"push", "--to", "oci:", fx.App}, []string{"empty directory"}},
		{[]string{"push", "--to", "/tmp/dir", fx.App}, []string{"oci:/tmp/dir"}},
		{[]string{"push", "--tag", "-bad", fx.App}, []string{"tag"}},
		{[]string{"push", "--compression", "lz4", fx.App}, []string{"compression"}},
		{[]string{"pull", "oci:/tmp/x", "--to", "/tmp/y"}, []string{"TAG"}},
		{[]string{"push", "--to", "oci:" + t.TempDir(), "/etc/passwd"}, []string{"not in the Nix store"}},
	} {
		stderr, code := runFail(t, tc.args...)
		mustContain(t, strings.Join(tc.args, " "), stderr, tc.wants...)
		if code != 2 && !strings.Contains(stderr, "not in the Nix store") {
			t.Errorf("%v: exit code %d, want 2", tc.args, code)
		}
	}
}

// TestRegistryDown: an unreachable registry is a clear, quick error.
func TestRegistryDown(t *testing.T) {
	fx := testenv.BuildFixture(t, "regdown")
	addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	start := time.Now()
	stderr, code := runFail(t, "push", "--to", addr+"/x:t", fx.App)
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	mustContain(t, "push error", stderr, addr, "registry unreachable", "connection refused")
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("failing took %v", d)
	}
	stderr, _ = runFail(t, "pull", addr+"/x:t", "--to", t.TempDir())
	mustContain(t, "pull error", stderr, "registry unreachable")
}

// TestRegistryRefusesCredentials: wrong or missing credentials are named
// as such, and nothing is tagged; the right ones work.
func TestRegistryRefusesCredentials(t *testing.T) {
	fx := testenv.BuildFixture(t, "regauth")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{User: "nix", Password: "s3cret-pw"})
	ref := reg.Ref("auth")
	for _, tc := range []struct{ name, config string }{
		{"wrong password", testenv.DockerConfig(t, reg.Addr, "nix", "wrong-pw")},
		{"no credentials", t.TempDir()},
	} {
		cmd := nixoci(t, "push", "--to", ref+":t", fx.App)
		cmd.Env = append(cmd.Env, "DOCKER_CONFIG="+tc.config)
		_, stderr, err := testenv.RunCmdErr(cmd)
		if err == nil {
			t.Fatalf("%s: push succeeded", tc.name)
		}
		mustContain(t, tc.name, stderr, reg.Addr, "refused authentication")
		if strings.Contains(stderr, "wrong-pw") {
			t.Errorf("%s: the password appears in the error", tc.name)
		}
	}
	if tags := registryTags(t, ref, "-u", "nix", "-p", "s3cret-pw"); len(tags) > 0 {
		t.Errorf("tags exist after refused pushes: %v", tags)
	}
	cmd := nixoci(t, "push", "--to", ref+":t", fx.App)
	cmd.Env = append(cmd.Env, "DOCKER_CONFIG="+testenv.DockerConfig(t, reg.Addr, "nix", "s3cret-pw"))
	testenv.RunCmd(t, cmd)
}
