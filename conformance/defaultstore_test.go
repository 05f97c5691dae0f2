package conformance

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/internal/testenv"
)

// TestDefaultStoreFlow (issue 22): on a fresh machine (a home of its
// own, no NIXOCI_STORE), `nixoci push ./result --tag hello && nixoci
// inspect hello && nixoci image --from hello …` works on the default
// store, and the image runs under runc; before the push, a tag alone
// fails saying where it looked and which forms name a closure.
func TestDefaultStoreFlow(t *testing.T) {
	fx := testenv.BuildFixture(t, "defaultstore")
	home, work := t.TempDir(), t.TempDir()
	if err := os.Symlink(fx.App, filepath.Join(work, "result")); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(home, ".local", "share", "nixoci", "store")
	fresh := func(args ...string) *exec.Cmd {
		cmd := nixoci(t, args...)
		cmd.Env = slices.DeleteFunc(cmd.Env, func(kv string) bool {
			return strings.HasPrefix(kv, "NIXOCI_STORE=") || strings.HasPrefix(kv, "HOME=")
		})
		cmd.Env = append(cmd.Env, "HOME="+home)
		cmd.Dir = work
		return cmd
	}
	_, stderr, err := testenv.RunCmdErr(fresh("inspect", "hello"))
	if err == nil {
		t.Fatal("inspect hello succeeded before anything was pushed")
	}
	mustContain(t, "inspect hello before the push", stderr, "hello is a tag of the default store oci:"+store, "oci:DIR[:TAG] or HOST[:PORT]/REPO[:TAG]")

	testenv.RunCmd(t, fresh("push", "./result", "--tag", "hello"))
	for _, ref := range []string{"hello", ":hello"} {
		out := testenv.RunCmd(t, fresh("inspect", ref))
		mustContain(t, "inspect "+ref, out, "closure  oci:"+store+":hello", fx.App, fx.Busybox, fx.Data)
	}
	img := filepath.Join(t.TempDir(), "img")
	testenv.RunCmd(t, fresh("image", "--from", "hello", "--to", "oci:"+img+":hello", "--link-root", "./result", "--entrypoint", "/bin/app"))
	if got := runImage(t, img, "hello"); got+"\n" != fx.Message {
		t.Errorf("the image of the default store's hello printed %q, want %q", got, fx.Message)
	}
	// A tag alone as --to names the default store too.
	testenv.RunCmd(t, fresh("image", "--from", ":hello", "--to", "hello-image", "--entrypoint", fx.App+"/bin/app"))
	if got := runImage(t, store, "hello-image"); got+"\n" != fx.Message {
		t.Errorf("the image in the default store printed %q, want %q", got, fx.Message)
	}
}
