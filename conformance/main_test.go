package conformance

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// nixoci returns a command running the nixoci binary built from this tree,
// with the default store pointed into a temporary directory.
func nixoci(t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	bin := testenv.BuildBinary(t, "github.com/nixoci/nixoci/cmd/nixoci")
	cmd := exec.Command(bin, args...)
	cmd.Env = append(testenv.NixEnv(), "NIXOCI_STORE="+filepath.Join(t.TempDir(), "default-store"))
	return cmd
}

// run runs nixoci and fails the test on error; it returns stdout.
func run(t testing.TB, args ...string) string {
	t.Helper()
	return testenv.RunCmd(t, nixoci(t, args...))
}

// runFail runs nixoci expecting failure and returns stderr and the exit code.
func runFail(t testing.TB, args ...string) (string, int) {
	t.Helper()
	stdout, stderr, err := testenv.RunCmdErr(nixoci(t, args...))
	if err == nil {
		t.Fatalf("nixoci %s succeeded, want failure; stdout:\n%s\nstderr:\n%s", strings.Join(args, " "), stdout, stderr)
	}
	code := -1
	if ee, ok := err.(interface{ ExitCode() int }); ok {
		code = ee.ExitCode()
	} else if ce, ok := err.(*testenv.CmdError); ok {
		if ee, ok := ce.Err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return stderr, code
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// oras runs the real oras CLI.
func oras(t testing.TB, args ...string) string {
	t.Helper()
	return testenv.Run(t, "oras", args...)
}

// tags lists a layout's tags by reading its index.json as any OCI tool would.
func layoutTags(t testing.TB, dir string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx struct {
		Manifests []struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	var tags []string
	for _, m := range idx.Manifests {
		if n, ok := m.Annotations["org.opencontainers.image.ref.name"]; ok {
			tags = append(tags, n)
		}
	}
	return tags
}

// registryTags lists a registry repository's tags with oras.
func registryTags(t testing.TB, ref string, orasFlags ...string) []string {
	t.Helper()
	args := append([]string{"repo", "tags", "--plain-http"}, orasFlags...)
	stdout, stderr, err := testenv.RunErr(t, "oras", append(args, ref)...)
	if err != nil {
		if strings.Contains(stderr, "name unknown") {
			return nil
		}
		t.Fatalf("oras repo tags %s: %v\n%s", ref, err, stderr)
	}
	return strings.Fields(stdout)
}

// copyAndCompare substitutes paths from a file:// cache into a fresh store
// and checks each equals the original.
func copyAndCompare(t testing.TB, cacheDir, publicKey string, root string, closure []string) {
	t.Helper()
	store := testenv.NewStoreDir(t)
	if out, err := testenv.NixCopyFrom(t, "file://"+cacheDir, store, publicKey, root); err != nil {
		t.Fatalf("nix copy --from file://%s: %v\n%s", cacheDir, err, out)
	}
	for _, p := range closure {
		testenv.TreesEqual(t, p, filepath.Join(store, p))
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
