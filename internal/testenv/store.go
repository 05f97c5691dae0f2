package testenv

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// NewStoreDir returns a fresh, empty directory for a separate Nix store:
// `nix copy --to DIR` or `--store DIR` puts paths under DIR/nix/store. The
// directory is removed at the end of the test, read-only store paths included.
func NewStoreDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("NewStoreDir: %v", err)
	}
	// Registered after t.TempDir's own cleanup, so it runs before it: make the
	// read-only store paths writable so that the removal works for non-root too.
	t.Cleanup(func() { makeWritable(dir) })
	return dir
}

func makeWritable(root string) {
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
}

// NixCopyFrom runs
//
//	nix copy --from CACHEURL --to STOREDIR \
//	  --option trusted-public-keys TRUSTEDPUBLICKEY \
//	  --option narinfo-cache-negative-ttl 0 --option narinfo-cache-positive-ttl 0 \
//	  PATHS...
//
// and returns its combined stdout and stderr and its error, without failing
// the test, so that tests can assert both success and refusal (for example
// "lacks a valid signature"). The error, if any, names the command line, exit
// status and stderr.
func NixCopyFrom(t testing.TB, cacheURL, storeDir, trustedPublicKey string, paths ...string) (string, error) {
	t.Helper()
	args := []string{"copy", "--from", cacheURL, "--to", storeDir,
		"--option", "trusted-public-keys", trustedPublicKey,
		"--option", "narinfo-cache-negative-ttl", "0",
		"--option", "narinfo-cache-positive-ttl", "0",
	}
	args = append(args, paths...)
	cmd := Cmd(t, "nix", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), &CmdError{Msg: failureOut(cmd, "", "output", string(out), err), Err: err}
	}
	return string(out), nil
}
