package conformance

import (
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/spec"
)

// served is a running `nixoci serve`.
type served struct {
	URL    string
	cmd    *exec.Cmd
	mu     sync.Mutex
	logs   bytes.Buffer
	exited chan struct{} // closed when the process has exited
}

// stop ends serve as a service manager does (SIGTERM) and waits until it
// has exited, failing the test if it did not exit cleanly.
func (s *served) stop(t *testing.T) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("nixoci serve did not exit on SIGTERM\n%s", s.Logs())
	}
	if !s.cmd.ProcessState.Success() {
		t.Fatalf("nixoci serve exited with %v on SIGTERM\n%s", s.cmd.ProcessState, s.Logs())
	}
}

func (s *served) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.Write(p)
}

// Logs returns what the server logged so far.
func (s *served) Logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.String()
}

// startServe runs `nixoci serve` on a free port with extra env entries,
// waits until it answers, and stops it (SIGTERM, checked to exit 0) at
// the end of the test. A port taken before serve binds it is retried.
func startServe(t *testing.T, env []string, args ...string) *served {
	t.Helper()
	var s *served
	testenv.StartOnFreePort(t, func(addr string) error {
		var err error
		s, err = tryServe(t, addr, env, args...)
		return err
	})
	return s
}

// startServeTLS is startServe for a serve given --tls-cert and
// --tls-key in args, with a certificate of ca; its URL is https://….
func startServeTLS(t *testing.T, ca *testenv.CA, env []string, args ...string) *served {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}}
	var s *served
	testenv.StartOnFreePort(t, func(addr string) error {
		var err error
		s, err = tryServeWith(t, addr, client, env, args...)
		return err
	})
	return s
}

// tryServe starts `nixoci serve` on addr and waits until it answers. It is
// testenv.ErrAddrInUse when serve exited because addr was taken.
func tryServe(t *testing.T, addr string, env []string, args ...string) (*served, error) {
	t.Helper()
	return tryServeWith(t, addr, nil, env, args...)
}

// tryServeWith is tryServe asking with client; with one (a client
// trusting its CA), over https.
func tryServeWith(t *testing.T, addr string, client *http.Client, env []string, args ...string) (*served, error) {
	t.Helper()
	cmd := nixoci(t, append([]string{"serve", "--listen", addr}, args...)...)
	cmd.Env = append(cmd.Env, env...)
	exited := make(chan struct{})
	s := &served{URL: "http://" + addr, cmd: cmd, exited: exited}
	if client != nil {
		s.URL = "https://" + addr
	}
	cmd.Stdout, cmd.Stderr = s, s
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	if err := testenv.WaitServerWith(client, s.URL+"/nix-cache-info", 20*time.Second, exited, http.StatusOK); err != nil {
		select {
		case <-exited:
			if testenv.BindFailed(s.Logs()) {
				return nil, fmt.Errorf("nixoci serve: %w:\n%s", testenv.ErrAddrInUse, s.Logs())
			}
			return nil, fmt.Errorf("nixoci serve exited: %v (%v)\n%s", waitErr, err, s.Logs())
		default:
			cmd.Process.Kill()
			<-exited
			return nil, fmt.Errorf("nixoci serve not ready on %s: %v\n%s", addr, err, s.Logs())
		}
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
			if waitErr != nil {
				t.Errorf("nixoci serve did not shut down cleanly on SIGTERM: %v\n%s", waitErr, s.Logs())
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Errorf("nixoci serve ignored SIGTERM")
		}
		if t.Failed() {
			t.Logf("nixoci serve logs:\n%s", s.Logs())
		}
	})
	return s, nil
}

// TestServeTakenPortIsRetried: serve on a port taken since FreePort
// found it fails in the way startServe retries on another port.
func TestServeTakenPortIsRetried(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, err = tryServe(t, taken.Addr().String(), nil, "--from", "oci:"+fixture.Layout(t).Dir())
	if !errors.Is(err, testenv.ErrAddrInUse) {
		t.Errorf("serve on a taken port: %v, want testenv.ErrAddrInUse", err)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// realise substitutes root into a fresh store with the real Nix client,
// through `nix-store --realise` with the server as the only substituter.
func realise(t *testing.T, url, publicKey, root string) (string, string, error) {
	t.Helper()
	store := testenv.NewStoreDir(t)
	cmd := testenv.Cmd(t, "nix-store", "--store", store, "--realise", root,
		"--option", "substituters", url, "--option", "trusted-public-keys", publicKey,
		"--option", "narinfo-cache-negative-ttl", "0", "--option", "narinfo-cache-positive-ttl", "0")
	_, stderr, err := testenv.RunCmdErr(cmd)
	return store, stderr, err
}

// TestServeToNix: the real Nix client substitutes a whole closure through
// `nixoci serve`, from an image layout and from a real registry, with the
// serving key trusted (serve vouching for the push key's signatures);
// with another key it refuses.
func TestServeToNix(t *testing.T) {
	fx := testenv.BuildFixture(t, "serve")
	pushKey := testenv.GenerateKey(t, "push-1")
	serveKey := testenv.GenerateKey(t, "serve-1")
	wrong := testenv.GenerateKey(t, "wrong-1")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	layout := "oci:" + filepath.Join(t.TempDir(), "l")
	run(t, "push", "--to", layout+":s", "--sign-key", pushKey.SecretFile, fx.App)
	run(t, "push", "--to", reg.Ref("nix")+":s", "--sign-key", pushKey.SecretFile, fx.App)

	for _, from := range []string{layout, reg.Ref("nix")} {
		t.Run(strings.SplitN(from, ":", 2)[0], func(t *testing.T) {
			// Serve vouches for what the push key signed.
			srv := startServe(t, nil, "--from", from, "--sign-key", serveKey.SecretFile, "--trusted-key", pushKey.Public)
			store, stderr, err := realise(t, srv.URL, serveKey.Public, fx.App)
			if err != nil {
				t.Fatalf("nix-store --realise through serve: %v\n%s", err, stderr)
			}
			for _, p := range fx.Closure {
				testenv.TreesEqual(t, p, filepath.Join(store, p))
			}
			store2 := testenv.NewStoreDir(t)
			if out, err := testenv.NixCopyFrom(t, srv.URL, store2, serveKey.Public, fx.App); err != nil {
				t.Fatalf("nix copy --from %s: %v\n%s", srv.URL, err, out)
			}
			testenv.TreesEqual(t, fx.App, filepath.Join(store2, fx.App))
			if _, stderr, err := realise(t, srv.URL, wrong.Public, fx.App); err == nil {
				t.Errorf("a client trusting only another key accepted the paths")
			} else if !strings.Contains(stderr, "signature") && !strings.Contains(stderr, "substitute") {
				t.Logf("refusal: %s", stderr)
			}
		})
	}
}

// TestServeRegistryAuth: serving from a registry that needs credentials
// works with them in the docker config, and fails clearly (5xx, not 404)
// without them.
func TestServeRegistryAuth(t *testing.T) {
	fx := testenv.BuildFixture(t, "serveauth")
	key := testenv.GenerateKey(t, "serveauth-1")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{User: "puller", Password: "pull-pw-1"})
	good := "DOCKER_CONFIG=" + testenv.DockerConfig(t, reg.Addr, "puller", "pull-pw-1")
	push := nixoci(t, "push", "--to", reg.Ref("private")+":s", "--sign-key", key.SecretFile, fx.App)
	push.Env = append(push.Env, good)
	testenv.RunCmd(t, push)

	srv := startServe(t, []string{good}, "--from", reg.Ref("private"))
	if _, stderr, err := realise(t, srv.URL, key.Public, fx.App); err != nil {
		t.Fatalf("realise with credentials: %v\n%s", err, stderr)
	}

	anon := startServe(t, []string{"DOCKER_CONFIG=" + t.TempDir()}, "--from", reg.Ref("private"))
	code, body := httpGet(t, anon.URL+"/"+spec.PathTag(fx.App)+".narinfo")
	if code < 500 {
		t.Errorf("narinfo without registry credentials: %d %q, want 5xx", code, body)
	}
	if code, _ := httpGet(t, anon.URL+"/healthz"); code != http.StatusServiceUnavailable {
		t.Errorf("healthz without credentials: %d, want 503", code)
	}
	if !strings.Contains(anon.Logs(), "refused authentication") {
		t.Errorf("server log does not say authentication was refused:\n%s", anon.Logs())
	}
	if strings.Contains(srv.Logs()+anon.Logs(), "pull-pw-1") {
		t.Error("a registry password appears in the server logs")
	}
}

// htpasswdFile writes an htpasswd file with the real htpasswd (Debian's
// apache2-utils), each user's password given on stdin; flags choose the
// hash (-B: bcrypt).
func htpasswdFile(t *testing.T, flag string, userPasswords ...string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "htpasswd")
	for i := 0; i+1 < len(userPasswords); i += 2 {
		args := []string{"-i", flag, f, userPasswords[i]}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		cmd := testenv.Cmd(t, "htpasswd", args...)
		cmd.Stdin = strings.NewReader(userPasswords[i+1])
		testenv.RunCmd(t, cmd)
	}
	return f
}

// TestServeUpload: `nix copy --to http://…` with a netrc and a server
// whose --credentials file `htpasswd -B` made stores paths as artifacts
// that inspect, oras and another client see; without credentials or with
// a wrong password every upload is refused and nothing is tagged.
func TestServeUpload(t *testing.T) {
	fx := testenv.BuildFixture(t, "upload")
	key := testenv.GenerateKey(t, "upload-1")
	layoutDir := filepath.Join(t.TempDir(), "l")
	creds := htpasswdFile(t, "-B", "ci", "up-pw-7", "other", "other-pw-3")
	if data, _ := os.ReadFile(creds); !strings.Contains(string(data), "ci:$2y$") {
		t.Fatalf("htpasswd -B did not write a bcrypt entry for ci:\n%s", data)
	}

	// Refused without --credentials at all.
	if stderr, code := runFail(t, "serve", "--from", "oci:"+layoutDir, "--upload"); code != 2 || !strings.Contains(stderr, "--credentials") {
		t.Errorf("serve --upload without credentials: exit %d: %s", code, stderr)
	}

	srv := startServe(t, nil, "--from", "oci:"+layoutDir, "--upload", "--credentials", creds)
	host := strings.TrimPrefix(srv.URL, "http://")
	hostOnly, _, _ := strings.Cut(host, ":")
	netrc := func(pw string) string {
		f := filepath.Join(t.TempDir(), "netrc")
		os.WriteFile(f, []byte(fmt.Sprintf("machine %s login ci password %s\n", hostOnly, pw)), 0o600)
		return f
	}
	nixCopyTo := func(netrcFile string) (string, error) {
		args := []string{"copy", "--to", srv.URL + "/?secret-key=" + key.SecretFile, fx.App}
		if netrcFile != "" {
			args = append(args, "--option", "netrc-file", netrcFile)
		}
		cmd := testenv.Cmd(t, "nix", args...)
		stdout, stderr, err := testenv.RunCmdErr(cmd)
		return stdout + stderr, err
	}
	for _, tc := range []struct{ name, netrc string }{
		{"no credentials", ""},
		{"wrong password", netrc("nope")},
		{"another user's password", netrc("other-pw-3")},
	} {
		if out, err := nixCopyTo(tc.netrc); err == nil {
			t.Fatalf("%s: nix copy --to succeeded:\n%s", tc.name, out)
		}
		if tags := layoutTags(t, layoutDir); len(tags) != 0 {
			t.Fatalf("%s: tags after a refused upload: %v", tc.name, tags)
		}
	}
	if out, err := nixCopyTo(netrc("up-pw-7")); err != nil {
		t.Fatalf("nix copy --to with credentials: %v\n%s", err, out)
	}
	tags := layoutTags(t, layoutDir)
	for _, p := range fx.Closure {
		if !contains(tags, spec.PathTag(p)) {
			t.Errorf("uploaded path %s is not tagged (tags %v)", p, tags)
		}
	}
	manifest := oras(t, "manifest", "fetch", "--oci-layout", layoutDir+":"+spec.PathTag(fx.App))
	mustContain(t, "uploaded manifest", manifest, spec.ArtifactTypePath, fx.App)
	inspect := run(t, "inspect", "oci:"+layoutDir+":"+spec.PathTag(fx.App))
	mustContain(t, "inspect of an uploaded path", inspect, fx.App, "upload-1")

	// Another client substitutes what was uploaded.
	reader := startServe(t, nil, "--from", "oci:"+layoutDir)
	store, stderr, err := realise(t, reader.URL, key.Public, fx.App)
	if err != nil {
		t.Fatalf("substituting uploaded paths: %v\n%s", err, stderr)
	}
	testenv.TreesEqual(t, fx.App, filepath.Join(store, fx.App))
	hashes, _ := os.ReadFile(creds)
	for _, secret := range append([]string{"up-pw-7", "other-pw-3"}, strings.Fields(string(hashes))...) {
		if strings.Contains(srv.Logs(), secret) {
			t.Errorf("a credential appears in the server logs: %q", secret)
		}
	}
	_, metrics := httpGet(t, srv.URL+"/metrics")
	if strings.Contains(metrics, "up-pw-7") || strings.Contains(metrics, "$2y$") {
		t.Error("a credential appears in the metrics")
	}
}

// TestServeRefusesWeakCredentials: a credentials file with a password in
// clear, or hashed otherwise than with bcrypt (htpasswd's default MD5,
// SHA-1), stops serve at startup with the file, the line and the scheme,
// never quoting the file.
func TestServeRefusesWeakCredentials(t *testing.T) {
	layout := "oci:" + filepath.Join(t.TempDir(), "l")
	plain := filepath.Join(t.TempDir(), "plain")
	os.WriteFile(plain, []byte("# the old nixoci format\nci:up-pw-7\n"), 0o600)
	for _, tc := range []struct {
		name, file string
		wants      []string
	}{
		{"plaintext", plain, []string{plain, "line 2", "plaintext", "htpasswd -B"}},
		{"htpasswd -m", htpasswdFile(t, "-m", "ci", "up-pw-7"), []string{"line 1", "$apr1$", "htpasswd -B"}},
		{"htpasswd -s", htpasswdFile(t, "-s", "ci", "up-pw-7"), []string{"line 1", "{SHA}", "htpasswd -B"}},
		{"bcrypt, then plaintext", func() string {
			f := htpasswdFile(t, "-B", "ci", "up-pw-7")
			data, _ := os.ReadFile(f)
			os.WriteFile(f, append(data, "late:up-pw-7\n"...), 0o600)
			return f
		}(), []string{"line 2", "plaintext"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stderr, code := runFail(t, "serve", "--from", layout, "--upload", "--credentials", tc.file, "--listen", "127.0.0.1:0")
			if code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			mustContain(t, "serve with "+tc.name+" credentials", stderr, tc.wants...)
			if strings.Contains(stderr, "up-pw-7") {
				t.Errorf("the error quotes the password:\n%s", stderr)
			}
		})
	}
}

// TestServeRegistryRestart: while the registry is down, requests answer
// 5xx (never 404); after it is back they succeed without restarting serve.
func TestServeRegistryRestart(t *testing.T) {
	fx := testenv.BuildFixture(t, "restart")
	key := testenv.GenerateKey(t, "restart-1")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	run(t, "push", "--to", reg.Ref("r")+":s", "--sign-key", key.SecretFile, fx.App)
	srv := startServe(t, nil, "--from", reg.Ref("r"), "--cache-ttl", "1ms", "--backend-timeout", "5s")
	narinfoURL := srv.URL + "/" + spec.PathTag(fx.App) + ".narinfo"
	code, body := httpGet(t, narinfoURL)
	if code != 200 {
		t.Fatalf("narinfo: %d", code)
	}
	var narURL string
	for _, l := range strings.Split(body, "\n") {
		if u, ok := strings.CutPrefix(l, "URL: "); ok {
			narURL = srv.URL + "/" + u
		}
	}

	reg.Stop()
	for _, u := range []string{narinfoURL, srv.URL + "/" + spec.PathTag(fx.Data) + ".narinfo", narURL} {
		code, body := httpGet(t, u)
		if code < 500 {
			t.Errorf("registry down: GET %s = %d %q, want 5xx", u, code, body)
		}
	}
	if code, _ := httpGet(t, srv.URL+"/healthz"); code != http.StatusServiceUnavailable {
		t.Errorf("healthz with the registry down: %d, want 503", code)
	}

	reg.Start()
	if code, _ := httpGet(t, narinfoURL); code != 200 {
		t.Errorf("after restart: narinfo %d", code)
	}
	if code, _ := httpGet(t, narURL); code != 200 {
		t.Errorf("after restart: NAR %d", code)
	}
	if _, stderr, err := realise(t, srv.URL, key.Public, fx.App); err != nil {
		t.Errorf("realise after restart: %v\n%s", err, stderr)
	}
}

// TestServeCorruptNAR: a NAR blob corrupted in the backend makes the
// client fail (its hash check or the truncated transfer), and the server
// logs the digest.
func TestServeCorruptNAR(t *testing.T) {
	fx := testenv.BuildFixture(t, "servecorrupt")
	key := testenv.GenerateKey(t, "corrupt-1")
	for _, tc := range []struct {
		name  string
		flags []string
	}{
		// Streamed from the layout, verified as it goes.
		{"streamed", []string{"--blob-cache-size", "0"}},
		// Fetched ahead into the NAR cache, which verifies before it
		// keeps anything: the corrupt blob is never cached, and then
		// streams (and is cut short) as above. (Forced: by default NARs
		// of a layout are not fetched ahead.)
		{"cached", []string{"--nar-ahead", "on"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			layoutDir := filepath.Join(t.TempDir(), "l")
			run(t, "push", "--to", "oci:"+layoutDir+":s", "--sign-key", key.SecretFile, fx.App)
			info, err := os.ReadFile(findNarInfo(t, layoutDir, fx.Busybox))
			if err != nil {
				t.Fatal(err)
			}
			var fileHash string
			for _, l := range strings.Split(string(info), "\n") {
				if h, ok := strings.CutPrefix(l, "FileHash: sha256:"); ok {
					fileHash = h
				}
			}
			blob := findBlobByNix32(t, layoutDir, fileHash)
			os.Chmod(blob, 0o644)
			data, _ := os.ReadFile(blob)
			data[len(data)/3] ^= 0x55
			os.WriteFile(blob, data, 0o644)

			srv := startServe(t, nil, append([]string{"--from", "oci:" + layoutDir}, tc.flags...)...)
			if _, stderr, err := realise(t, srv.URL, key.Public, fx.App); err == nil {
				t.Fatal("nix-store --realise accepted a corrupt NAR")
			} else {
				t.Logf("client refused:\n%s", stderr)
			}
			if !strings.Contains(srv.Logs(), "corrupt blob") || !strings.Contains(srv.Logs(), filepath.Base(blob)) {
				t.Errorf("server log does not name the corrupt blob sha256:%s:\n%s", filepath.Base(blob), srv.Logs())
			}
		})
	}
}

// findNarInfo returns the file of the narinfo blob of storePath in a
// layout, found through its path manifest's tag.
func findNarInfo(t *testing.T, layoutDir, storePath string) string {
	t.Helper()
	manifest := oras(t, "manifest", "fetch", "--oci-layout", layoutDir+":"+spec.PathTag(storePath))
	var m struct {
		Layers []struct {
			MediaType string `json:"mediaType"`
			Digest    string `json:"digest"`
		} `json:"layers"`
	}
	if err := json.Unmarshal([]byte(manifest), &m); err != nil {
		t.Fatal(err)
	}
	for _, l := range m.Layers {
		if l.MediaType == spec.MediaTypeNarInfo {
			return filepath.Join(layoutDir, "blobs", "sha256", strings.TrimPrefix(l.Digest, "sha256:"))
		}
	}
	t.Fatalf("no narinfo layer in %s", manifest)
	return ""
}

// TestServeHostileRequests: malformed names, traversal and huge headers
// are refused quickly, without touching the backend.
func TestServeHostileRequests(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	srv := startServe(t, nil, "--from", reg.Ref("empty"))
	backendCalls := func() string {
		_, m := httpGet(t, srv.URL+"/metrics")
		var lines []string
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, "nixoci_backend_requests_total") {
				lines = append(lines, l)
			}
		}
		return strings.Join(lines, "\n")
	}
	before := backendCalls()
	for _, tc := range []struct {
		path string
		want []int
	}{
		{"/short.narinfo", []int{404}},
		{"/" + strings.Repeat("e", 32) + ".narinfo", []int{404}}, // 'e' is not nix-base32
		{"/nar/xyz.nar.xz", []int{400}},
		{"/nar/" + strings.Repeat("0", 52) + ".nar.gz", []int{400}},
		{"/nar/../../etc/passwd", []int{400, 404}},
		{"/nar/%2e%2e/%2e%2e/etc/passwd", []int{400}},
		{"/%2e%2e%2fetc%2fpasswd", []int{400}},
		{"/nar//etc/passwd", []int{400}},
		{"/" + strings.Repeat("a", 10000), []int{404}},
	} {
		req, _ := http.NewRequest("GET", srv.URL+tc.path, nil)
		req.URL.Opaque = tc.path // send the path exactly as written
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", tc.path, err)
		}
		resp.Body.Close()
		if !containsInt(tc.want, resp.StatusCode) {
			t.Errorf("GET %s = %d, want %v", tc.path, resp.StatusCode, tc.want)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("GET %s took %v", tc.path, d)
		}
	}
	req, _ := http.NewRequest("GET", srv.URL+"/nix-cache-info", nil)
	req.Header.Set("X-Huge", strings.Repeat("x", 1<<20))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("1 MiB header: %d, want 431", resp.StatusCode)
		}
		resp.Body.Close()
	}
	if after := backendCalls(); after != before {
		t.Errorf("hostile requests reached the backend:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func containsInt(list []int, n int) bool {
	for _, x := range list {
		if x == n {
			return true
		}
	}
	return false
}

// findBlobByNix32 returns the layout file of the blob whose sha256 is
// given in nix-base32 (a narinfo FileHash).
func findBlobByNix32(t *testing.T, layoutDir, nix32 string) string {
	t.Helper()
	raw, err := nixbase32.DecodeString(nix32)
	if err != nil {
		t.Fatalf("FileHash %q: %v", nix32, err)
	}
	return filepath.Join(layoutDir, "blobs", "sha256", hex.EncodeToString(raw))
}
