package testenv

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// registryReadyTimeout bounds how long StartRegistry and Start wait for the
// registry to answer GET /v2/.
const registryReadyTimeout = 30 * time.Second

// registryStopTimeout bounds how long Stop waits after SIGTERM before SIGKILL.
const registryStopTimeout = 10 * time.Second

// RegistryOptions configures StartRegistry.
type RegistryOptions struct {
	// User, when not empty, turns on htpasswd (bcrypt) authentication with this
	// single user and Password. Without it the registry needs no credentials.
	User, Password string
	// Token, when set, turns on token authentication (auth: token) with
	// this token server as realm and its certificate as rootcertbundle;
	// User and Password are then not used.
	Token *TokenServer
	// Program is the registry binary: "docker-registry" (Debian's
	// distribution 2.8, the default) or "registry" (distribution v3,
	// installed by .ci/run); both take the same configuration.
	Program string
	// StorageDir, if set, is the storage root (default: a new temp dir).
	StorageDir string
	// RedirectBaseURL, if set, turns on the redirect storage middleware:
	// blob GETs answer 307 to RedirectBaseURL + the blob's path under the
	// storage root (docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data),
	// as registries on object storage redirect to it.
	RedirectBaseURL string
	// Deletes turns on manifest deletes (storage.delete.enabled), which
	// distribution leaves off by default, as most registries users run
	// do; only rm and gc need them.
	Deletes bool
}

// Registry is a real docker-registry (distribution 2.8, or distribution v3
// with RegistryOptions.Program) listening on
// 127.0.0.1, with filesystem storage in a temp dir. Its methods must be called
// from the test's goroutine (they may call t.Fatal).
type Registry struct {
	Addr       string // "127.0.0.1:PORT"
	Dir        string // storage root (storage.filesystem.rootdirectory)
	ConfigFile string // the config.yml it is served with
	LogFile    string // its stdout and stderr, appended to across restarts
	User       string // from RegistryOptions; empty without auth
	Password   string

	t        testing.TB
	exe      string
	token    *TokenServer // token authentication: GET /v2/ answers 401
	redirect string       // base URL of the redirect middleware, if any
	deletes  bool

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has exited
	waitErr error         // cmd.Wait's result, valid once exited is closed
	starts  int
}

// StartRegistry starts docker-registry on a free 127.0.0.1 port (another
// one if the port is taken before it binds it, see StartOnFreePort) with
// storage in a temp dir and waits (with a deadline) until GET /v2/ answers: 200
// without auth, 401 with auth. The config is version 0.1, filesystem storage,
// deletes as opts.Deletes says (off by default, as in distribution), log level warn and, when opts.User is set, htpasswd auth
// (the file made with htpasswd -B). t.Cleanup stops the registry and, if the
// test failed, logs the tail of its log file.
func StartRegistry(t testing.TB, opts RegistryOptions) *Registry {
	t.Helper()
	return startRegistry(t, opts, func() int { return FreePort(t) })
}

// startRegistry is StartRegistry on ports from port.
func startRegistry(t testing.TB, opts RegistryOptions, port func() int) *Registry {
	t.Helper()
	exe := Tool(t, cmp.Or(opts.Program, "docker-registry"))
	base := t.TempDir()
	r := &Registry{
		Dir:        filepath.Join(base, "storage"),
		ConfigFile: filepath.Join(base, "config.yml"),
		LogFile:    filepath.Join(base, "registry.log"),
		User:       opts.User,
		Password:   opts.Password,
		t:          t,
		exe:        exe,
		token:      opts.Token,
		redirect:   opts.RedirectBaseURL,
		deletes:    opts.Deletes,
	}
	if opts.StorageDir != "" {
		r.Dir = opts.StorageDir
	} else if err := os.Mkdir(r.Dir, 0o755); err != nil {
		t.Fatalf("StartRegistry: %v", err)
	}

	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		t.Fatalf("StartRegistry: %v", err)
	}
	htpasswdFile := ""
	if opts.User != "" {
		htpasswdFile = filepath.Join(base, "htpasswd")
		cmd := Cmd(t, "htpasswd", "-i", "-B", "-c", htpasswdFile, opts.User)
		cmd.Stdin = strings.NewReader(opts.Password)
		RunCmd(t, cmd)
	}

	t.Cleanup(func() {
		r.Stop()
		if t.Failed() {
			t.Logf("docker-registry %s log (%s), last lines:\n%s", r.Addr, r.LogFile, r.logTail())
		}
	})
	startOnPorts(t, port, func(addr string) error {
		r.Addr = addr
		if err := r.writeConfig(hex.EncodeToString(secret), htpasswdFile); err != nil {
			return err
		}
		return r.start()
	})
	return r
}

// writeConfig writes the registry's config.yml for r.Addr.
func (r *Registry) writeConfig(secret, htpasswdFile string) error {
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "version: 0.1\n")
	fmt.Fprintf(&cfg, "log:\n  level: warn\n  accesslog:\n    disabled: true\n")
	fmt.Fprintf(&cfg, "storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: %t\n", yamlString(r.Dir), r.deletes)
	if r.redirect != "" {
		fmt.Fprintf(&cfg, "  redirect:\n    disable: false\nmiddleware:\n  storage:\n    - name: redirect\n      options:\n        baseurl: %s\n", yamlString(r.redirect))
	}
	fmt.Fprintf(&cfg, "http:\n  addr: %s\n  secret: %s\n", yamlString(r.Addr), secret)
	if r.token != nil {
		cfg.WriteString(r.token.registryConfig())
	} else if htpasswdFile != "" {
		fmt.Fprintf(&cfg, "auth:\n  htpasswd:\n    realm: nixoci-test\n    path: %s\n", yamlString(htpasswdFile))
	}
	if err := os.WriteFile(r.ConfigFile, []byte(cfg.String()), 0o644); err != nil {
		return fmt.Errorf("StartRegistry: %w", err)
	}
	return nil
}

// Ref returns "127.0.0.1:PORT/" + repo.
func (r *Registry) Ref(repo string) string { return r.Addr + "/" + repo }

// URL returns "http://127.0.0.1:PORT".
func (r *Registry) URL() string { return "http://" + r.Addr }

// Start starts the registry again on the same Addr and storage (after Stop)
// and waits until it is ready, failing the test if it does not get ready
// within the deadline or exits (for example because the port was taken in
// the meantime).
func (r *Registry) Start() {
	r.t.Helper()
	if err := r.start(); err != nil {
		r.t.Fatalf("Registry.Start: %v", err)
	}
}

// start starts the registry on r.Addr and waits until it is ready. It is
// ErrAddrInUse when the registry exited because it could not bind r.Addr.
func (r *Registry) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return fmt.Errorf("docker-registry %s is already running (pid %d)", r.Addr, r.cmd.Process.Pid)
	}
	r.starts++
	logf, err := os.OpenFile(r.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	logStart, err := logf.Seek(0, io.SeekEnd)
	if err != nil {
		logf.Close()
		return err
	}
	fmt.Fprintf(logf, "--- testenv: start #%d of docker-registry on %s at %s ---\n", r.starts, r.Addr, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(r.exe, "serve", r.ConfigFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childProcAttr()
	err = cmd.Start()
	logf.Close() // the child has its own copy
	if err != nil {
		return fmt.Errorf("starting %s: %w", CommandLine(cmd.Args), err)
	}
	r.cmd = cmd
	r.exited = make(chan struct{})
	go func(exited chan struct{}) {
		r.waitErr = cmd.Wait()
		close(exited)
	}(r.exited)

	want := http.StatusOK
	if r.User != "" || r.token != nil {
		want = http.StatusUnauthorized
	}
	if err := waitHTTP(nil, r.URL()+"/v2/", registryReadyTimeout, r.exited, want); err != nil {
		exitMsg := "it was still running and has been killed"
		exited := false
		select {
		case <-r.exited:
			exitMsg, exited = fmt.Sprintf("it exited: %v", r.waitErr), true
		default:
			r.kill()
		}
		r.cmd = nil
		err = fmt.Errorf("docker-registry on %s (%s) is not ready: %w\n%s\nlog (%s), last lines:\n%s",
			r.Addr, CommandLine(cmd.Args), err, exitMsg, r.LogFile, r.logTail())
		if exited && BindFailed(r.logSince(logStart)) {
			err = fmt.Errorf("%w: %w", ErrAddrInUse, err)
		}
		return err
	}
	return nil
}

// Stop stops the registry (SIGTERM, then SIGKILL after a deadline) and waits
// until the process has exited. The storage stays, and Addr stays the
// registry's for Start (nothing else of ours binds it, though another process
// could). Stop is a no-op when the registry is not running. If the registry
// had died by itself before Stop, the test is marked failed with its log tail.
func (r *Registry) Stop() {
	t := r.t
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	select {
	case <-r.exited:
		t.Errorf("docker-registry on %s had exited by itself before Stop: %v\nlog (%s), last lines:\n%s",
			r.Addr, r.waitErr, r.LogFile, r.logTail())
	default:
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.exited:
		case <-time.After(registryStopTimeout):
			t.Logf("docker-registry on %s did not exit within %v of SIGTERM; killing it", r.Addr, registryStopTimeout)
			r.kill()
		}
	}
	r.cmd = nil
}

// kill sends SIGKILL and waits for the exit. r.mu must be held.
func (r *Registry) kill() {
	_ = r.cmd.Process.Kill()
	<-r.exited
}

// logSince returns the log file from offset on.
func (r *Registry) logSince(offset int64) string {
	data, err := os.ReadFile(r.LogFile)
	if err != nil || offset > int64(len(data)) {
		return ""
	}
	return string(data[offset:])
}

// logTail returns the last lines of the log file.
func (r *Registry) logTail() string {
	data, err := os.ReadFile(r.LogFile)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", r.LogFile, err)
	}
	s := strings.TrimRight(string(data), "\n")
	if s == "" {
		return "(empty)"
	}
	lines := strings.Split(s, "\n")
	if len(lines) > 40 {
		lines = append([]string{fmt.Sprintf("[... %d lines cut ...]", len(lines)-40)}, lines[len(lines)-40:]...)
	}
	return tail(strings.Join(lines, "\n"), 8192)
}

// yamlString renders s as a YAML double-quoted scalar (JSON strings are valid
// YAML double-quoted scalars).
func yamlString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
