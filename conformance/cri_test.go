package conformance

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/internal/testenv"
)

// cri is containerd with its CRI plugin, driven by crictl as a kubelet
// drives it (registries/CRI in the shared notes has the pitfalls).
type cri struct {
	t    *testing.T
	sock string
	dir  string
	pods int
}

// startCRI starts containerd with the CRI plugin: sandboxes made of the
// image pause (which the test makes: sandbox images must come from a
// local registry here), plain-HTTP registries, runc's state and the
// CNI configuration under a temporary directory (pods use the host's
// network, so no CNI network is needed), restrict_oom_score_adj because
// these VMs refuse negative OOM scores.
func startCRI(t *testing.T, pause string, plainHTTP ...string) *cri {
	t.Helper()
	testenv.Tool(t, "crictl")
	testenv.Tool(t, "runc")
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "cni"), 0o755)
	conf := fmt.Sprintf(`  sandbox_image = %q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = %q
`, pause, filepath.Join(dir, "cni"), filepath.Join(dir, "runc"))
	for _, host := range plainHTTP {
		conf += fmt.Sprintf("  [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.%q]\n    endpoint = [%q]\n", host, "http://"+host)
	}
	c := &cri{t: t, dir: dir}
	c.sock = startContainerdWith(t, dir, conf)
	return c
}

// crictl runs crictl against the containerd, failing the test on error.
func (c *cri) crictl(args ...string) string {
	c.t.Helper()
	stdout, stderr, err := c.crictlErr(args...)
	if err != nil {
		c.t.Fatalf("crictl %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return stdout
}

func (c *cri) crictlErr(args ...string) (stdout, stderr string, err error) {
	c.t.Helper()
	endpoint := "unix://" + c.sock
	return testenv.RunErr(c.t, "crictl", append([]string{"--runtime-endpoint", endpoint, "--image-endpoint", endpoint, "--timeout", "60s"}, args...)...)
}

// writeJSON writes v as JSON into the containerd's directory.
func (c *cri) writeJSON(name string, v any) string {
	c.t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// run runs image in a new pod sandbox, as a kubelet does (runp, create,
// start), with command if given (else the image's), waits for it to
// exit and returns what `crictl logs` shows of its output, without the
// final newline.
func (c *cri) run(image string, command ...string) string {
	c.t.Helper()
	c.pods++
	name := fmt.Sprintf("nixoci-%d", c.pods)
	pod := c.writeJSON(name+"-pod.json", map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": name, "attempt": 0},
		"log_directory": filepath.Join(c.dir, "logs", name),
		"linux":         map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}},
	})
	ctr := map[string]any{
		"metadata": map[string]any{"name": "main"},
		"image":    map[string]any{"image": image},
		"log_path": "main.log",
	}
	if len(command) > 0 {
		ctr["command"] = command
	}
	ctrFile := c.writeJSON(name+"-ctr.json", ctr)
	podID := strings.TrimSpace(c.crictl("runp", pod))
	c.t.Cleanup(func() { c.crictlErr("stopp", podID); c.crictlErr("rmp", "-f", podID) })
	id := strings.TrimSpace(c.crictl("create", podID, ctrFile, pod))
	c.crictl("start", id)
	deadline := time.Now().Add(60 * time.Second)
	for {
		var st struct {
			Status struct {
				State    string `json:"state"`
				ExitCode int    `json:"exitCode"`
			} `json:"status"`
		}
		if err := json.Unmarshal([]byte(c.crictl("inspect", "-o", "json", id)), &st); err != nil {
			c.t.Fatalf("crictl inspect %s: %v", id, err)
		}
		if st.Status.State == "CONTAINER_EXITED" {
			logs := c.crictl("logs", id)
			if st.Status.ExitCode != 0 {
				c.t.Fatalf("%s exited %d; logs:\n%s", image, st.Status.ExitCode, logs)
			}
			return logs
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s still %s after 60s", image, st.Status.State)
		}
		time.Sleep(100 * time.Millisecond) // polling interval
	}
}

// inspectImage is what `crictl inspecti` shows of an image.
type inspectImage struct {
	Status struct {
		ID       string   `json:"id"`
		RepoTags []string `json:"repoTags"`
		UID      *struct {
			Value string `json:"value"`
		} `json:"uid"`
	} `json:"status"`
	Info struct {
		ImageSpec struct {
			Architecture string `json:"architecture"`
			OS           string `json:"os"`
			Config       struct {
				User       string   `json:"User"`
				Env        []string `json:"Env"`
				Entrypoint []string `json:"Entrypoint"`
				Cmd        []string `json:"Cmd"`
			} `json:"config"`
			History []struct {
				CreatedBy string `json:"created_by"`
			} `json:"history"`
		} `json:"imageSpec"`
	} `json:"info"`
}

func (c *cri) inspecti(image string) inspectImage {
	c.t.Helper()
	var out inspectImage
	raw := c.crictl("inspecti", "-o", "json", image)
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		c.t.Fatalf("crictl inspecti %s: %v\n%s", image, err, raw)
	}
	return out
}

// TestCRI: Kubernetes' runtime interface, as a kubelet uses it, pulls and
// runs nixoci images: containerd's CRI plugin, driven by crictl, pulls an
// image from docker-registry and one composed on demand by serve
// --registry, shows their config, user and env, runs them in pod
// sandboxes (crictl runp, create, start) and crictl logs shows their
// output; an image index resolves to this machine's platform; a
// Buildpacks build image runs as its user, whose home is writable; an
// image missing a blob fails to pull, saying which.
func TestCRI(t *testing.T) {
	testenv.Tool(t, "crictl")
	m := newMultiArch(t, "cri")
	fx := m.fx
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	from := []string{"--from", m.layout + ":hello-x86_64"}
	image := func(tag string, flags ...string) string {
		t.Helper()
		ref := reg.Ref("cri/" + tag)
		run(t, append(append([]string{"image", "--to", ref}, from...), flags...)...)
		return ref
	}
	pause := image("pause:v1", "--link-root", fx.Busybox, "--entrypoint", "/bin/busybox", "--cmd", "sleep", "--cmd", "infinity")
	app := image("app:v1", "--link-root", fx.App, "--link-root", fx.Busybox, "--entrypoint", "/bin/app",
		"--user", "1000:1000", "--env", "GREETING=hello")
	bp := image("bp:v1", "--link-root", fx.Busybox, "--buildpacks-stack", "org.example.nix", "--buildpacks-build")
	// Its root layer (with its own user) is in no other image here, so
	// containerd cannot have it already.
	broken := image("broken:v1", "--link-root", fx.App, "--entrypoint", "/bin/app", "--user", "4242:4242")
	run(t, "image", "--from", m.layout+":hello-x86_64", "--from", m.layout+":hello-aarch64", "--to", reg.Ref("cri/multi:v1"), "--link-root", fx.App, "--link-root", m.arm.App, "--entrypoint", "/bin/app")
	srv := startServe(t, nil, "--from", m.layout, "--registry")
	serveHost := strings.TrimPrefix(srv.URL, "http://")

	c := startCRI(t, pause, reg.Addr, serveHost)

	t.Run("docker-registry", func(t *testing.T) {
		c.t = t
		c.crictl("pull", app)
		img := c.inspecti(app)
		cfg := img.Info.ImageSpec.Config
		if cfg.User != "1000:1000" || !contains(cfg.Env, "GREETING=hello") || strings.Join(cfg.Entrypoint, " ") != "/bin/app" {
			t.Errorf("inspecti: user %q, env %q, entrypoint %q", cfg.User, cfg.Env, cfg.Entrypoint)
		}
		if img.Status.UID == nil || img.Status.UID.Value != "1000" {
			t.Errorf("inspecti: uid %+v, want 1000", img.Status.UID)
		}
		if h := img.Info.ImageSpec.History; len(h) != len(fx.Closure)+1 || !strings.Contains(h[len(h)-1].CreatedBy, "root filesystem") {
			t.Errorf("inspecti: history %+v, want one entry per layer", h)
		}
		if got := c.run(app); got+"\n" != fx.Message {
			t.Errorf("crictl logs: %q, want %q", got, fx.Message)
		}
	})

	t.Run("serve --registry", func(t *testing.T) {
		c.t = t
		ref := serveHost + "/hello-x86_64:latest"
		c.crictl("pull", ref)
		cfg := c.inspecti(ref).Info.ImageSpec.Config
		if strings.Join(cfg.Cmd, " ") != "/bin/app" || len(cfg.Entrypoint) != 0 {
			t.Errorf("composed image: cmd %q entrypoint %q, want the closure's one program", cfg.Cmd, cfg.Entrypoint)
		}
		// No command in the container config: the image's default runs.
		if got := c.run(ref); got+"\n" != fx.Message {
			t.Errorf("crictl logs: %q, want %q", got, fx.Message)
		}
	})

	t.Run("index", func(t *testing.T) {
		c.t = t
		ref := reg.Ref("cri/multi:v1")
		c.crictl("pull", ref)
		if arch := c.inspecti(ref).Info.ImageSpec.Architecture; arch != runtime.GOARCH {
			t.Errorf("the index pulled %s, want this machine's %s", arch, runtime.GOARCH)
		}
		if got := c.run(ref); got+"\n" != fx.Message {
			t.Errorf("crictl logs: %q, want %q", got, fx.Message)
		}
	})

	t.Run("buildpacks", func(t *testing.T) {
		c.t = t
		c.crictl("pull", bp)
		got := c.run(bp, "/bin/sh", "-c", "touch /home/cnb/x && echo $(/bin/busybox id -u):$(/bin/busybox id -g) $CNB_USER_ID:$CNB_GROUP_ID")
		if got != "1001:1000 1001:1000" {
			t.Errorf("the build image ran %q, want its user 1001:1000 writing its home", got)
		}
	})

	t.Run("missing blob", func(t *testing.T) {
		c.t = t
		m := imageManifestRemote(t, broken)
		layer := m.Layers[len(m.Layers)-1].Digest
		data := filepath.Join(reg.Dir, "docker/registry/v2/blobs/sha256", layer.Encoded()[:2], layer.Encoded(), "data")
		if err := os.Remove(data); err != nil {
			t.Fatal(err)
		}
		_, stderr, err := c.crictlErr("pull", broken)
		t.Logf("crictl pull: %s", strings.TrimSpace(stderr))
		if err == nil || !strings.Contains(stderr, layer.Encoded()) {
			t.Errorf("pull of an image missing layer %s: %v\n%s\nwant a failure naming the layer", layer, err, stderr)
		}
	})
}

// imageManifestRemote reads an image manifest from a registry with crane.
func imageManifestRemote(t *testing.T, ref string) ocispec.Manifest {
	t.Helper()
	var m ocispec.Manifest
	if err := json.Unmarshal([]byte(testenv.Run(t, "crane", "manifest", "--insecure", ref)), &m); err != nil {
		t.Fatal(err)
	}
	return m
}
