package conformance

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/internal/testenv"
)

// TestFromCacheCredentialsNotLeaked: a --from-cache URL carrying
// credentials (http://user:password@host/) reaches a real nginx asking
// for them through a proxy of ours injecting 503s, so pushes retry and
// log; the password (or a token given as the user name), in clear or
// base64, appears in no warning, error or output: not in retries, not
// when a path is missing, not when the cache refuses the credentials,
// not when the URL does not even parse.
func TestFromCacheCredentialsNotLeaked(t *testing.T) {
	const user, password, token = "cacheuser", "C4che-s3cret-pw", "T0ken-s3cret-xyz"
	c := newSynthCache(t)
	root, _ := c.tree("leak", 3, 2)
	nginx := testenv.StartNginxStaticAuth(t, c.dir, htpasswdFile(t, "-B", user, password))
	proxy := testenv.StartFaultProxy(t, nginx.Addr, testenv.FaultOptions{Seed: 19, Status503: 0.2})
	withCreds := func(userinfo string) string {
		return "http://" + userinfo + "@" + proxy.Addr + "/"
	}
	secrets := []string{password, token, "pa ss",
		base64.StdEncoding.EncodeToString([]byte(user + ":" + password)),
		base64.StdEncoding.EncodeToString([]byte(user + ":wrong-" + password)),
	}
	check := func(what, out string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s: output holds the secret %q:\n%s", what, s, out)
			}
		}
	}
	layout := "oci:" + t.TempDir() + "/l"

	// Credentials accepted, retries logged.
	stdout, stderr, err := testenv.RunCmdErr(nixoci(t, "push", "--from-cache", withCreds(user+":"+password), "--to", layout+":leak", root))
	if err != nil {
		t.Fatalf("push with credentials in the cache URL: %v\n%s", err, stderr)
	}
	if proxy.Faults() == 0 || !strings.Contains(stderr, "retrying") {
		t.Fatalf("no retry to log (%d faults injected):\n%s", proxy.Faults(), stderr)
	}
	mustContain(t, "retry warnings", stderr, "binary cache http://"+proxy.Addr)
	check("push with retries", stdout+stderr)

	for _, tc := range []struct {
		name, url, path string
		want            string
	}{
		{"missing path", withCreds(user + ":" + password), synthStorePath("leak-absent"), "leak-absent"},
		{"wrong password", withCreds(user + ":wrong-" + password), root, "401"},
		{"token as user name", withCreds(token), root, "401"},
		{"unparseable URL", withCreds(user + ":pa ss"), root, "binary cache"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stderr, _ := runFail(t, "push", "--from-cache", tc.url, "--to", layout+":x", tc.path)
			mustContain(t, tc.name, stderr, tc.want)
			check(tc.name, stderr)
		})
	}
}
