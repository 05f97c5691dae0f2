package conformance

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	orasgo "oras.land/oras-go/v2"

	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/spec"
)

// TestServeTrustPolicy: with --sign-key, serve vouches only for what it
// can verify. A path pushed unsigned is served without serve's
// signature, and Nix trusting only serve's key refuses it; the same
// closure signed by a key named with --trusted-key gets serve's
// signature; paths uploaded through `nix copy --to` with credentials get
// it; --sign-unverified signs everything and says so at startup.
func TestServeTrustPolicy(t *testing.T) {
	fx := testenv.BuildFixture(t, "trust")
	up := testenv.BuildFixture(t, "trustup")
	serveKey := testenv.GenerateKey(t, "trust-serve-1")
	named := testenv.GenerateKey(t, "trust-ci-1")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	run(t, "push", "--to", reg.Ref("unsigned")+":s", fx.App)
	run(t, "push", "--to", reg.Ref("signed")+":s", "--sign-key", named.SecretFile, fx.App)
	serve := func(repo string, extra ...string) *served {
		return startServe(t, nil, append([]string{"--from", reg.Ref(repo), "--sign-key", serveKey.SecretFile}, extra...)...)
	}

	t.Run("unsigned", func(t *testing.T) {
		s := serve("unsigned", "--trusted-key", named.Public)
		if _, stderr, err := realise(t, s.URL, serveKey.Public, fx.App); err == nil {
			t.Errorf("Nix trusting only serve's key realised paths pushed unsigned")
		} else if !strings.Contains(stderr, "signature") && !strings.Contains(stderr, "substitute") {
			t.Logf("Nix: %s", stderr)
		}
		_, body := httpGet(t, s.URL+"/"+spec.PathTag(fx.App)+".narinfo")
		if strings.Contains(body, "Sig: "+serveKey.Name+":") {
			t.Errorf("serve signed a path pushed unsigned:\n%s", body)
		}
	})
	t.Run("signed by a named key", func(t *testing.T) {
		s := serve("signed", "--trusted-key", named.PublicFile)
		store, stderr, err := realise(t, s.URL, serveKey.Public, fx.App)
		if err != nil {
			t.Fatalf("realising paths signed by a trusted key: %v\n%s", err, stderr)
		}
		for _, p := range fx.Closure {
			testenv.TreesEqual(t, p, filepath.Join(store, p))
		}
	})
	t.Run("uploaded", func(t *testing.T) {
		creds := htpasswdFile(t, "-B", "ci", "trust-pw-5")
		s := serve("uploads", "--upload", "--credentials", creds)
		host, _, _ := strings.Cut(strings.TrimPrefix(s.URL, "http://"), ":")
		netrc := filepath.Join(t.TempDir(), "netrc")
		os.WriteFile(netrc, []byte(fmt.Sprintf("machine %s login ci password trust-pw-5\n", host)), 0o600)
		// Uploaded unsigned: serve signs what it received itself.
		if _, stderr, err := testenv.RunCmdErr(testenv.Cmd(t, "nix", "copy", "--to", s.URL, up.App, "--option", "netrc-file", netrc)); err != nil {
			t.Fatalf("nix copy --to serve: %v\n%s", err, stderr)
		}
		// A fresh serve with the same key vouches for them too.
		again := serve("uploads")
		store, stderr, err := realise(t, again.URL, serveKey.Public, up.App)
		if err != nil {
			t.Fatalf("realising uploaded paths: %v\n%s", err, stderr)
		}
		testenv.TreesEqual(t, up.App, filepath.Join(store, up.App))
	})
	t.Run("sign unverified", func(t *testing.T) {
		s := serve("unsigned", "--sign-unverified")
		if _, stderr, err := realise(t, s.URL, serveKey.Public, fx.App); err != nil {
			t.Fatalf("realising with --sign-unverified: %v\n%s", err, stderr)
		}
		mustContain(t, "serve's startup log", s.Logs(), "level=WARN", "--sign-unverified")
	})
}

// TestServeCatalogFailure: the registry refuses tag listings when serve
// starts, then one closure copied without path tags cannot be read among
// good ones: while the listing fails, paths of copied closures answer
// 5xx; once it works, the good closures substitute and the unreadable
// one's paths stay 5xx; no path a closure holds is ever answered 404.
func TestServeCatalogFailure(t *testing.T) {
	good := testenv.BuildFixture(t, "catgood")
	bad := testenv.BuildFixture(t, "catbad")
	key := testenv.GenerateKey(t, "cat-1")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	run(t, "push", "--to", reg.Ref("src")+":good", "--sign-key", key.SecretFile, good.App)
	run(t, "push", "--to", reg.Ref("src")+":bad", "--sign-key", key.SecretFile, bad.App)
	ctx := context.Background()
	src, dst := openTarget(t, reg.Ref("src")), openTarget(t, reg.Ref("copied"))
	for _, tag := range []string{"good", "bad"} {
		if _, err := orasgo.Copy(ctx, src, tag, dst, tag, orasgo.DefaultCopyOptions); err != nil {
			t.Fatal(err)
		}
	}
	badIndex, err := dst.Resolve(ctx, "bad")
	if err != nil {
		t.Fatal(err)
	}
	var refuseTags atomic.Bool
	refuseTags.Store(true)
	proxy := testenv.StartFaultProxy(t, reg.Addr, testenv.FaultOptions{Status503: 1, MaxConsecutive: -1, Only: func(r *http.Request) bool {
		return refuseTags.Load() && strings.HasSuffix(r.URL.Path, "/tags/list") ||
			strings.HasSuffix(r.URL.Path, "/manifests/"+badIndex.Digest.String())
	}})
	s := startServe(t, nil, "--from", proxy.Ref("copied"), "--catalog-interval", "1s", "--backend-timeout", "3s")
	root := spec.PathTag(good.App)
	if code, _ := httpGet(t, s.URL+"/"+root+".narinfo"); code < 500 {
		t.Errorf("a copied closure's root while tags cannot be listed: %d, want 5xx", code)
	}
	refuseTags.Store(false)
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _ := httpGet(t, s.URL+"/"+root+".narinfo")
		if code == 200 {
			break
		}
		if code == 404 || time.Now().After(deadline) {
			t.Fatalf("the good closure's root once tags list: %d", code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	store, stderr, err := realise(t, s.URL, key.Public, good.App)
	if err != nil {
		t.Fatalf("realising the good copied closure: %v\n%s", err, stderr)
	}
	testenv.TreesEqual(t, good.App, filepath.Join(store, good.App))
	if _, _, err := realise(t, s.URL, key.Public, bad.App); err == nil {
		t.Errorf("realised the closure whose index cannot be read")
	}
	if code, _ := httpGet(t, s.URL+"/"+spec.PathTag(bad.App)+".narinfo"); code < 500 {
		t.Errorf("the unreadable closure's root: %d, want 5xx", code)
	}
	mustContain(t, "serve's log", s.Logs(), "closure bad")
	for _, f := range []testenv.Fixture{good, bad} {
		for _, p := range f.Closure {
			for _, code := range narinfoAnswers(s, spec.PathTag(p)) {
				if code == "404" {
					t.Errorf("serve answered 404 for %s, which a copied closure holds", p)
				}
			}
		}
	}
}
