package conformance

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixoci/nixoci/internal/testenv"
)

// startContainerd runs containerd (Debian's, 1.6) as root with its root,
// state and socket in a temporary directory, and returns the socket.
func startContainerd(t *testing.T) string {
	t.Helper()
	return startContainerdWith(t, t.TempDir(), "")
}

// startContainerdWith is startContainerd with its files in dir and cri
// added to the CRI plugin's section of its configuration.
func startContainerdWith(t *testing.T, dir, cri string) string {
	t.Helper()
	bin := testenv.Tool(t, "containerd")
	testenv.Tool(t, "ctr")
	sock := filepath.Join(dir, "containerd.sock")
	cfg := filepath.Join(dir, "config.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
%s`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, cri)), 0o644)
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
		if t.Failed() {
			data, _ := os.ReadFile(logf.Name())
			t.Logf("containerd log:\n%s", tailLines(string(data), 30))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, _, err := testenv.RunErr(t, "ctr", "--address", sock, "version"); err == nil {
			return sock
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer on %s", sock)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestContainerdRunsComposedImage: containerd pulls an image composed by
// `nixoci serve --registry` over plain HTTP and runs it with runc.
func TestContainerdRunsComposedImage(t *testing.T) {
	fx := testenv.BuildFixture(t, "containerd")
	layoutDir := filepath.Join(t.TempDir(), "l")
	run(t, "push", "--to", "oci:"+layoutDir+":app", fx.App)
	names := filepath.Join(t.TempDir(), "names.json")
	os.WriteFile(names, []byte(`{"hello": {"closures": ["app"], "entrypoint": ["/bin/app"]}}`), 0o644)
	srv := startServe(t, nil, "--from", "oci:"+layoutDir, "--registry", "--names", names)
	sock := startContainerd(t)
	ref := strings.TrimPrefix(srv.URL, "http://") + "/hello:latest"
	testenv.Run(t, "ctr", "--address", sock, "images", "pull", "--plain-http", ref)
	id := fmt.Sprintf("nixoci-%d", time.Now().UnixNano())
	out := testenv.Run(t, "ctr", "--address", sock, "run", "--rm", ref, id)
	if out+"\n" != fx.Message {
		t.Errorf("containerd ran the image and it printed %q, want %q", out, fx.Message)
	}
}
