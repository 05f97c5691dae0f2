package conformance

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// authCheck runs nixoci against a registry with token auth and checks
// what each run asked of the token server.
type authCheck struct {
	t     *testing.T
	ts    *testenv.TokenServer
	proxy *testenv.FaultProxy // in front of the registry, counting requests
	seen  strings.Builder     // all nixoci wrote: no secret may be in it
}

// run runs nixoci with env (and debug logs on) and returns stdout,
// stderr and the error.
func (a *authCheck) run(env []string, args ...string) (string, string, error) {
	a.t.Helper()
	cmd := nixoci(a.t, args...)
	cmd.Env = append(append(cmd.Env, env...), "NIXOCI_DEBUG=1")
	stdout, stderr, err := testenv.RunCmdErr(cmd)
	a.seen.WriteString(stdout + "\n" + stderr + "\n")
	return stdout, stderr, err
}

// step runs nixoci, which must succeed, and checks its token requests.
func (a *authCheck) step(name, user string, env []string, args ...string) string {
	a.t.Helper()
	tokens, requests := len(a.ts.Requests()), a.proxy.Requests()
	stdout, stderr, err := a.run(env, args...)
	if err != nil {
		a.t.Fatalf("%s: %v\n%s", name, err, stderr)
	}
	a.checkTokens(name, user, a.ts.Requests()[tokens:], a.proxy.Requests()-requests)
	return stdout
}

// checkTokens: every token request of a run (or a serve's life) was
// granted to user, no scope was asked twice, and far fewer tokens were
// asked than registry requests made.
func (a *authCheck) checkTokens(name, user string, reqs []testenv.TokenRequest, registryRequests int) {
	a.t.Helper()
	perScope := map[string]int{}
	for _, r := range reqs {
		if r.Status != http.StatusOK || r.User != user {
			a.t.Errorf("%s: token request %+v, want one granted to %q", name, r, user)
		}
		perScope[strings.Join(r.Scopes, " ")]++
	}
	for scope, n := range perScope {
		if n > 1 {
			a.t.Errorf("%s: %d token requests for %q, want 1", name, n, scope)
		}
	}
	if len(reqs) == 0 || registryRequests <= len(reqs) {
		a.t.Errorf("%s: %d token requests for %d registry requests", name, len(reqs), registryRequests)
	}
	a.t.Logf("%s: %d registry requests, %d token requests %v", name, registryRequests, len(reqs), perScope)
}

// TestTokenAuth: against registries with token auth and our token
// server, push, pull, inspect, image, copy and serve (the real Nix
// substituting through it) work with credentials from a docker config
// file, from a credential helper named in credHelpers and from one in
// credsStore (and serve from NIXOCI_REGISTRY_USERNAME and _PASSWORD),
// asking one token per scope per run, not one per request;
// serve gets a new token when the registry refuses the one it has; a
// wrong password fails naming the token server's answer; anonymous pulls
// work where granted and fail clearly where not; neither the password
// nor any token appears in what nixoci prints, logs or serves.
func TestTokenAuth(t *testing.T) {
	const password = "tok3n-Pass-word"
	fx := testenv.BuildFixture(t, "tokenauth")
	key := testenv.GenerateKey(t, "tokenauth-1")
	for _, r := range registryPrograms {
		t.Run(r.name, func(t *testing.T) {
			ts := testenv.StartTokenServer(t, testenv.TokenOptions{
				Users:     map[string]testenv.TokenUser{"nix": {Password: password, Grants: map[string][]string{"*": {"pull", "push", "delete"}}}},
				Anonymous: map[string][]string{"public": {"pull"}},
			})
			reg := testenv.StartRegistry(t, testenv.RegistryOptions{Token: ts, Program: r.program})
			proxy := testenv.StartFaultProxy(t, reg.Addr, testenv.FaultOptions{})
			a := &authCheck{t: t, ts: ts, proxy: proxy}
			host := proxy.Addr
			helper := testenv.NewCredentialHelper(t, "test", host, "nix", password)
			sources := []struct {
				name string
				env  []string
			}{
				{"docker config", []string{"DOCKER_CONFIG=" + testenv.DockerConfig(t, host, "nix", password)}},
				{"credHelpers", []string{"DOCKER_CONFIG=" + testenv.DockerConfigJSON(t, map[string]any{"credHelpers": map[string]string{host: "test"}}), helper.PathEnv()}},
				{"credsStore", []string{"DOCKER_CONFIG=" + testenv.DockerConfigJSON(t, map[string]any{"credsStore": "test"}), helper.PathEnv()}},
			}
			for i, src := range sources {
				repo := fmt.Sprintf("%s/src%d", host, i)
				a.step(src.name+": push", "nix", src.env, "push", "--to", repo+":app", "--sign-key", key.SecretFile, fx.App)
				cache := t.TempDir()
				a.step(src.name+": pull", "nix", src.env, "pull", repo+":app", "--to", cache)
				copyAndCompare(t, cache, key.Public, fx.App, fx.Closure)
				mustContain(t, src.name+": inspect", a.step(src.name+": inspect", "nix", src.env, "inspect", repo+":app"), fx.App)
				// --jobs 1: layers converted at once store the same config
				// blob at once, and docker-registry 2.8 then sometimes loses
				// it (MANIFEST_BLOB_UNKNOWN; image does not retry that yet).
				a.step(src.name+": image", "nix", src.env, "image", "--jobs", "1", "--from", repo+":app", "--to", repo+"-img:app", "--entrypoint", "/bin/app", "--link-root", fx.App)
				a.step(src.name+": copy", "nix", src.env, "copy", repo+":app", repo+"-copy:app")
			}
			if calls := helper.Calls(t); len(calls) == 0 || calls[0] != "get "+host {
				t.Errorf("credential helper calls %q, want gets for %s", calls, host)
			}

			// serve, and Nix through it; then the registry's signing key
			// changes, the token serve holds is refused, and it gets a new one.
			tokens, requests := len(ts.Requests()), proxy.Requests()
			// No NAR cache: the NAR asked after the key change comes from the registry.
			srv := startServe(t, append(sources[1].env, "NIXOCI_DEBUG=1"), "--from", host+"/src0", "--blob-cache-size", "0")
			store, stderr, err := realise(t, srv.URL, key.Public, fx.App)
			if err != nil {
				t.Fatalf("substituting through serve: %v\n%s", err, stderr)
			}
			testenv.TreesEqual(t, fx.App, filepath.Join(store, fx.App))
			a.checkTokens("serve", "nix", ts.Requests()[tokens:], proxy.Requests()-requests)
			ts.RotateKey()
			reg.Stop()
			reg.Start()
			tokens = len(ts.Requests())
			code, text := httpGet(t, srv.URL+"/"+spec.PathTag(fx.Busybox)+".narinfo")
			if code != http.StatusOK {
				t.Fatalf("narinfo through serve: %d %s", code, text)
			}
			info, err := narinfo.Parse(strings.NewReader(text))
			if err != nil {
				t.Fatal(err)
			}
			code, nar := httpGet(t, srv.URL+"/"+info.URL)
			if code != http.StatusOK || uint64(len(nar)) != info.FileSize {
				t.Errorf("NAR through serve after the key change: %d, %d bytes, want 200, %d", code, len(nar), info.FileSize)
			}
			if got := ts.Requests()[tokens:]; len(got) != 1 || got[0].Status != http.StatusOK {
				t.Errorf("token requests after the registry refused serve's token: %+v, want one granted", got)
			}
			_, metrics := httpGet(t, srv.URL+"/metrics")
			a.seen.WriteString(metrics + srv.Logs())

			// serve in a container: credentials from the environment.
			tokens, requests = len(ts.Requests()), proxy.Requests()
			envSrv := startServe(t, []string{"DOCKER_CONFIG=" + t.TempDir(), "NIXOCI_REGISTRY_USERNAME=nix", "NIXOCI_REGISTRY_PASSWORD=" + password},
				"--from", host+"/src1")
			if _, stderr, err := realise(t, envSrv.URL, key.Public, fx.App); err != nil {
				t.Fatalf("substituting through serve with credentials from the environment: %v\n%s", err, stderr)
			}
			a.checkTokens("serve, credentials from the environment", "nix", ts.Requests()[tokens:], proxy.Requests()-requests)
			_, metrics = httpGet(t, envSrv.URL+"/metrics")
			a.seen.WriteString(metrics + envSrv.Logs())
			_, stderr, err = a.run([]string{"NIXOCI_REGISTRY_USERNAME=nix"}, "serve", "--from", host+"/src1")
			if err == nil || !strings.Contains(stderr, "NIXOCI_REGISTRY_PASSWORD") {
				t.Errorf("serve with a user and no password: %v, %s; want a usage error naming NIXOCI_REGISTRY_PASSWORD", err, stderr)
			}

			// A wrong password: the token server's refusal, named.
			wrong := []string{"DOCKER_CONFIG=" + testenv.DockerConfig(t, host, "nix", "wrong-"+password)}
			_, stderr, err = a.run(wrong, "push", "--to", host+"/src9:app", fx.App)
			if err == nil {
				t.Fatal("push with a wrong password succeeded")
			}
			mustContain(t, "wrong password", stderr, host+"/src9", "refused authentication", ts.Realm, "401", "invalid username or password")

			// Anonymous: pulls where granted, a clear refusal elsewhere.
			a.step("push public", "nix", sources[0].env, "push", "--to", host+"/public:app", "--sign-key", key.SecretFile, fx.App)
			anonymous := []string{"DOCKER_CONFIG=" + t.TempDir()}
			a.step("anonymous pull", "", anonymous, "pull", host+"/public:app", "--to", t.TempDir())
			for _, args := range [][]string{
				{"pull", host + "/src0:app", "--to", t.TempDir()},
				{"push", "--to", host + "/public:mine", fx.App},
			} {
				_, stderr, err := a.run(anonymous, args...)
				if err == nil {
					t.Fatalf("anonymous %s succeeded", args[0])
				}
				mustContain(t, "anonymous "+args[0], stderr, host, "refused authentication", "401")
			}

			issued := ts.Issued()
			secrets := append([]string{password, base64.StdEncoding.EncodeToString([]byte("nix:" + password))}, issued...)
			for _, s := range secrets {
				if strings.Contains(a.seen.String(), s) {
					t.Errorf("a secret (%.12s…) appears in nixoci's output, logs or metrics", s)
				}
			}
			t.Logf("%d tokens issued in all; none found in %d bytes of output, logs and metrics", len(issued), a.seen.Len())
		})
	}
}
