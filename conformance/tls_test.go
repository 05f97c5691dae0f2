package conformance

import (
	"crypto/tls"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/spec"
)

// TestServeTLS: serve over HTTPS as a platform team runs it. curl
// negotiates HTTP/2; the real Nix client, trusting the test CA through
// NIX_SSL_CERT_FILE, substitutes a closure over https (HTTP/2, as
// Nix's filetransfer.cc asks curl for, CURL_HTTP_VERSION_2TLS); a
// renewed certificate is served without a restart.
func TestServeTLS(t *testing.T) {
	fx := testenv.BuildFixture(t, "tls")
	key := testenv.GenerateKey(t, "push-1")
	layout := "oci:" + filepath.Join(t.TempDir(), "l")
	run(t, "push", "--to", layout+":tls", "--sign-key", key.SecretFile, fx.App)

	ca := testenv.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ca.Issue(t, certFile, keyFile)
	srv := startServeTLS(t, ca, nil, "--from", layout, "--tls-cert", certFile, "--tls-key", keyFile)

	t.Run("curl", func(t *testing.T) {
		out := testenv.Run(t, "curl", "-sS", "--http2", "--cacert", ca.CAFile, "-o", "/dev/null",
			"-w", "%{http_version} %{http_code}", srv.URL+"/nix-cache-info")
		if out != "2 200" {
			t.Errorf("curl --http2: %q, want HTTP/2 and 200", out)
		}
		// Without the CA curl refuses: the certificate is checked.
		cmd := testenv.Cmd(t, "curl", "-sS", "-o", "/dev/null", srv.URL+"/nix-cache-info")
		if _, _, err := testenv.RunCmdErr(cmd); err == nil {
			t.Errorf("curl trusted serve's certificate without its CA")
		}
	})

	t.Run("nix", func(t *testing.T) {
		store := testenv.NewStoreDir(t)
		cmd := testenv.Cmd(t, "nix-store", "--store", store, "--realise", fx.App,
			"--option", "substituters", srv.URL, "--option", "trusted-public-keys", key.Public,
			"--option", "narinfo-cache-negative-ttl", "0", "--option", "narinfo-cache-positive-ttl", "0")
		cmd.Env = append(cmd.Env, "NIX_SSL_CERT_FILE="+ca.CAFile)
		if _, stderr, err := testenv.RunCmdErr(cmd); err != nil {
			t.Fatalf("nix-store --realise over https: %v\n%s", err, stderr)
		}
		for _, p := range fx.Closure {
			testenv.TreesEqual(t, p, filepath.Join(store, p))
		}
		// Every narinfo and NAR Nix fetched came over HTTP/2.
		re := regexp.MustCompile(`(?m)^.*msg=request method=GET path=/(\S+\.narinfo|nar/\S+) status=200 .* proto=(\S+)$`)
		var h2, other int
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) { // the access log is written once a second
			h2, other = 0, 0
			for _, m := range re.FindAllStringSubmatch(srv.Logs(), -1) {
				if m[2] == "HTTP/2.0" {
					h2++
				} else {
					other++
				}
			}
			if h2 >= 2*len(fx.Closure) || time.Now().After(deadline) {
				break
			}
		}
		if h2 < 2*len(fx.Closure) || other > 0 {
			t.Errorf("Nix's narinfo and NAR requests: %d over HTTP/2, %d otherwise; want a narinfo and a NAR for each of %d paths, all HTTP/2\n%s",
				h2, other, len(fx.Closure), srv.Logs())
		}
	})

	t.Run("renewal", func(t *testing.T) {
		serial := ca.Issue(t, certFile, keyFile)
		var got *big.Int
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) { // polling for the reload
			c, err := tls.Dial("tcp", strings.TrimPrefix(srv.URL, "https://"), &tls.Config{RootCAs: ca.Pool})
			if err != nil {
				t.Fatal(err)
			}
			got = c.ConnectionState().PeerCertificates[0].SerialNumber
			c.Close()
			if got.Cmp(serial) == 0 {
				break
			}
		}
		if got.Cmp(serial) != 0 {
			t.Fatalf("serving certificate %v 10s after the files were renewed to %v", got, serial)
		}
		for deadline := time.Now().Add(5 * time.Second); !strings.Contains(srv.Logs(), "TLS certificate reloaded"); time.Sleep(50 * time.Millisecond) { // its stderr is read by a goroutine
			if time.Now().After(deadline) {
				t.Errorf("the reload is not logged")
				break
			}
		}
	})

	t.Run("upload", func(t *testing.T) {
		upDir := filepath.Join(t.TempDir(), "up")
		creds := htpasswdFile(t, "-B", "ci", "tls-pw-5")
		up := startServeTLS(t, ca, nil, "--from", "oci:"+upDir, "--upload", "--credentials", creds,
			"--tls-cert", certFile, "--tls-key", keyFile)
		netrc := filepath.Join(t.TempDir(), "netrc")
		if err := os.WriteFile(netrc, []byte("machine 127.0.0.1 login ci password tls-pw-5\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := testenv.Cmd(t, "nix", "copy", "--to", up.URL, "--option", "netrc-file", netrc, fx.App)
		cmd.Env = append(cmd.Env, "NIX_SSL_CERT_FILE="+ca.CAFile)
		if stdout, stderr, err := testenv.RunCmdErr(cmd); err != nil {
			t.Fatalf("nix copy --to over https: %v\n%s%s", err, stdout, stderr)
		}
		tags := layoutTags(t, upDir)
		for _, p := range fx.Closure {
			if !contains(tags, spec.PathTag(p)) {
				t.Errorf("uploaded path %s is not tagged (tags %v)", p, tags)
			}
		}
		re := regexp.MustCompile(`(?m)^.*msg=request method=PUT path=/nar/\S+ status=\d+ .* proto=HTTP/2.0$`)
		for deadline := time.Now().Add(10 * time.Second); len(re.FindAllString(up.Logs(), -1)) < len(fx.Closure); time.Sleep(100 * time.Millisecond) { // the access log is written once a second
			if time.Now().After(deadline) {
				t.Fatalf("want %d NAR uploads over HTTP/2 in the access log:\n%s", len(fx.Closure), up.Logs())
			}
		}
		if strings.Contains(up.Logs(), "tls-pw-5") {
			t.Error("the upload password appears in the server logs")
		}
	})
}
