package conformance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"

	"github.com/nixoci/nixoci/codec"
	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/nar"
	"github.com/nixoci/nixoci/spec"
)

// caNix is a content-addressed derivation (ca-derivations) depending on
// another, whose output holds a file under lib/debug/.build-id.
const caNix = `let
  mk = name: script: deps: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    __contentAddressed = true;
    outputHashMode = "recursive";
    outputHashAlgo = "sha256";
    args = [ "-c" script ];
    PATH = "/usr/bin:/bin";
    inherit deps;
  };
  dep = mk "proto-ca-dep-SALT" ''
    echo building dep SALT
    mkdir -p $out/lib/debug/.build-id/ab
    echo debug symbols SALT > $out/lib/debug/.build-id/ab/cdef0123456789abcdef0123456789abcdef01.debug
    echo hi SALT > $out/hello
  '' [];
in mk "proto-ca-app-SALT" ''
  echo building app SALT
  mkdir $out
  cat ${dep}/hello > $out/x
  ln -s ${dep} $out/dep
'' [ dep ]
`

// caEnv is NixEnv with content-addressed derivations enabled.
func caEnv() []string {
	return append(testenv.NixEnv(), "NIX_CONFIG="+os.Getenv("NIX_CONFIG")+
		"\nexperimental-features = nix-command ca-derivations\nbuild-users-group =\nsubstituters =\nsandbox = false\nnarinfo-cache-positive-ttl = 0\nnarinfo-cache-negative-ttl = 0")
}

func caCmd(t *testing.T, name string, args ...string) *exec.Cmd {
	cmd := testenv.Cmd(t, name, args...)
	cmd.Env = caEnv()
	return cmd
}

// protocolServe is a serve over a docker-registry with uploads on, and a
// netrc for Nix to upload with.
type protocolServe struct {
	*served
	netrc string
	key   testenv.KeyPair
	ref   string // the registry repository
	reg   *testenv.Registry
}

func startProtocolServe(t *testing.T) *protocolServe {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{Deletes: true})
	key := testenv.GenerateKey(t, "proto-serve-1")
	creds := htpasswdFile(t, "-B", "ci", "proto-pw-20")
	srv := startServe(t, nil, "--from", reg.Ref("proto"), "--upload", "--credentials", creds, "--sign-key", key.SecretFile, "--record-interval", "1s")
	host, _, _ := strings.Cut(strings.TrimPrefix(srv.URL, "http://"), ":")
	netrc := filepath.Join(t.TempDir(), "netrc")
	os.WriteFile(netrc, []byte(fmt.Sprintf("machine %s login ci password proto-pw-20\n", host)), 0o600)
	return &protocolServe{served: srv, netrc: netrc, key: key, ref: reg.Ref("proto"), reg: reg}
}

// request sends one HTTP request with the upload credentials (if auth).
func (p *protocolServe) request(t *testing.T, method, path string, body []byte, auth bool, header ...string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, p.URL+path, bytes.NewReader(body))
	if auth {
		req.SetBasicAuth("ci", "proto-pw-20")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	tr := &http.Transport{DisableCompression: true}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, data
}

// TestServeProtocolFiles: with Debian's Nix 2.8 through serve on a real
// docker-registry: build logs (copy-log, nix log), a content-addressed
// derivation copied and realised by substitution through its
// realisation, NAR listings uploaded and made from NARs, the debug-info
// index, both realisation layouts, compressed uploads and bad input.
func TestServeProtocolFiles(t *testing.T) {
	srv := startProtocolServe(t)
	salt := fmt.Sprintf("p%d", os.Getpid())
	file := filepath.Join(t.TempDir(), "ca.nix")
	os.WriteFile(file, []byte(strings.ReplaceAll(caNix, "SALT", salt)), 0o644)
	app := testenv.RunCmd(t, caCmd(t, "nix-build", file, "--no-out-link"))
	appDrv := testenv.RunCmd(t, caCmd(t, "nix-store", "--query", "--deriver", app))
	to := srv.URL + "?secret-key=" + srv.key.SecretFile

	t.Run("content-addressed", func(t *testing.T) {
		testenv.RunCmd(t, caCmd(t, "nix", "copy", "--to", to+"&write-nar-listing=true&index-debug-info=true", "-f", file, "--option", "netrc-file", srv.netrc))
		store := testenv.NewStoreDir(t)
		out, stderr, err := testenv.RunCmdErr(caCmd(t, "nix", "build", "--store", store, "-f", file, "--no-link", "--max-jobs", "0",
			"--option", "substituters", srv.URL, "--option", "trusted-public-keys", srv.key.Public, "--option", "require-sigs", "true"))
		if err != nil {
			t.Fatalf("nix build by substitution: %v\n%s%s", err, out, stderr)
		}
		testenv.TreesEqual(t, app, filepath.Join(store, app))
		if strings.Contains(stderr, "building '") {
			t.Errorf("nix built instead of substituting:\n%s", stderr)
		}
	})

	t.Run("push and oras pull", func(t *testing.T) {
		// The same output pushed from the local store with its
		// realisations and build logs, pulled by oras (each layer written
		// at its title), is a binary cache Nix substitutes the
		// content-addressed derivation from, with signature checking on.
		pushKey := testenv.GenerateKey(t, "proto-push-1")
		pushed := srv.reg.Ref("proto-push")
		out := run(t, "push", "--to", pushed, "--tag", "ca", "--logs", "--sign-key", pushKey.SecretFile, app)
		if !strings.Contains(out, pushed+":ca") {
			t.Fatalf("push printed %q", out)
		}
		dir := t.TempDir()
		oras(t, "pull", "--plain-http", pushed+":ca", "-o", dir)
		pulled := testenv.ReadTree(t, dir)
		var realisations, traces, logs int
		for name := range pulled {
			switch {
			case strings.HasPrefix(name, "realisations/sha256:") && strings.HasSuffix(name, "!out.doi"):
				realisations++
			case strings.HasPrefix(name, "build-trace-v2/"):
				traces++
			case strings.HasPrefix(name, "log/"):
				logs++
			}
		}
		if realisations != 2 || traces != 2 || logs != 2 {
			t.Errorf("oras pull wrote %d realisations, %d build traces, %d logs; want 2 each (app and its dependency)", realisations, traces, logs)
		}
		logName := "log/" + filepath.Base(appDrv)
		want := testenv.RunCmd(t, caCmd(t, "nix", "log", app))
		if got := string(pulled[logName]); strings.TrimSpace(got) != strings.TrimSpace(want) || !strings.Contains(got, "building app "+salt) {
			t.Errorf("%s = %q, nix log says %q", logName, got, want)
		}
		store := testenv.NewStoreDir(t)
		stdout, stderr, err := testenv.RunCmdErr(caCmd(t, "nix", "build", "--store", store, "-f", file, "--no-link", "--max-jobs", "0",
			"--option", "substituters", "file://"+dir, "--option", "trusted-public-keys", pushKey.Public, "--option", "require-sigs", "true"))
		if err != nil {
			t.Fatalf("nix build by substitution from the pulled cache: %v\n%s%s", err, stdout, stderr)
		}
		testenv.TreesEqual(t, app, filepath.Join(store, app))
		if strings.Contains(stderr, "building '") {
			t.Errorf("nix built instead of substituting:\n%s", stderr)
		}

		// nixoci copy carries them, to another repository and to a
		// layout; each is tagged as serve finds it, and pulls the same.
		copied := srv.reg.Ref("proto-copy")
		run(t, "copy", pushed+":ca", copied+":ca")
		layout := filepath.Join(t.TempDir(), "layout")
		run(t, "copy", copied+":ca", "oci:"+layout+":ca")
		tags := strings.Join(registryTags(t, copied), " ")
		for _, want := range []string{spec.LogTag(appDrv), "realisation."} {
			if !strings.Contains(tags, want) {
				t.Errorf("copied repository lacks a tag %s…: %s", want, tags)
			}
		}
		again := t.TempDir()
		run(t, "pull", "oci:"+layout+":ca", "--to", again)
		if got := testenv.ReadTree(t, again); len(got) != len(pulled) {
			t.Errorf("nixoci pull of the copy wrote %d files, oras pull of the push %d", len(got), len(pulled))
		} else {
			for name, data := range pulled {
				if !bytes.Equal(got[name], data) {
					t.Errorf("%s differs after the copies", name)
				}
			}
		}
		// oras copy carries them too, without tags: serve over the copy
		// finds them through the closure (its catalog), and Nix
		// substitutes through serve and reads the log.
		orasCopy := srv.reg.Ref("proto-oras")
		oras(t, "copy", "--from-plain-http", "--to-plain-http", pushed+":ca", orasCopy+":ca")
		if tags := strings.Join(registryTags(t, orasCopy), " "); strings.Contains(tags, "realisation.") || strings.Contains(tags, ".log") {
			t.Fatalf("oras copy carried file tags (%s); the test needs a copy without them", tags)
		}
		copySrv := startServe(t, nil, "--from", orasCopy)
		store2 := testenv.NewStoreDir(t)
		stdout, stderr, err = testenv.RunCmdErr(caCmd(t, "nix", "build", "--store", store2, "-f", file, "--no-link", "--max-jobs", "0",
			"--option", "substituters", copySrv.URL, "--option", "trusted-public-keys", pushKey.Public, "--option", "require-sigs", "true"))
		if err != nil || strings.Contains(stderr, "building '") {
			t.Errorf("nix build through serve over an oras copy: %v\n%s%s", err, stdout, stderr)
		}
		if got, stderr, err := testenv.RunCmdErr(caCmd(t, "nix", "log", "--store", copySrv.URL, app)); err != nil || !strings.Contains(got, "building app "+salt) {
			t.Errorf("nix log through serve over an oras copy: %v\n%s%s", err, got, stderr)
		}

		var summary struct {
			Files []struct{ Kind, StorePath string }
		}
		if err := json.Unmarshal([]byte(run(t, "inspect", "--json", "oci:"+layout+":ca")), &summary); err != nil || len(summary.Files) != 4 {
			t.Errorf("inspect --json files: %+v (%v), want 2 realisations and 2 logs", summary.Files, err)
		}
	})

	t.Run("push from a file cache", func(t *testing.T) {
		// What nix copy --to file:// wrote of a content-addressed closure
		// (realisations, listings, the debug-info index) and copy-log
		// added, pushed from that directory and pulled back, is the same
		// directory (nixoci's nix-cache-info says more).
		cache := t.TempDir()
		testenv.RunCmd(t, caCmd(t, "nix", "copy", "--to", "file://"+cache+"?secret-key="+srv.key.SecretFile+"&write-nar-listing=true&index-debug-info=true", "-f", file))
		testenv.RunCmd(t, caCmd(t, "nix", "store", "copy-log", "--to", "file://"+cache, appDrv))
		want := testenv.ReadTree(t, cache)
		ref := srv.reg.Ref("proto-fromcache")
		run(t, "push", "--to", ref, "--tag", "ca", "--from-cache", "file://"+cache, app)
		dir := t.TempDir()
		run(t, "pull", ref+":ca", "--to", dir)
		got := testenv.ReadTree(t, dir)
		kinds := map[string]int{}
		for name, data := range want {
			if name == "nix-cache-info" {
				continue
			}
			kinds[strings.SplitN(name, "/", 2)[0]]++
			if !bytes.Equal(got[name], data) {
				t.Errorf("%s: pulled %d bytes, nix copy wrote %d", name, len(got[name]), len(data))
			}
		}
		if len(got) != len(want) {
			t.Errorf("pulled %d files, nix copy wrote %d", len(got), len(want))
		}
		if kinds["realisations"] == 0 || kinds["debuginfo"] != 1 || kinds["log"] != 1 {
			t.Errorf("nix copy wrote %v; the fixture should hold realisations, a debug-info entry and a log", kinds)
		}
	})

	t.Run("build trace layouts", func(t *testing.T) {
		// The realisation Nix 2.8 uploaded (pre-2.35 layout) is read
		// through the 2.35 layout, under the deriver the output's narinfo
		// records, signed by serve.
		code, _, body := srv.request(t, "GET", "/build-trace-v2/"+filepath.Base(appDrv)+"/out.doi", nil, false)
		if code != 200 {
			t.Fatalf("GET build-trace-v2 of an old-layout upload: %d %s", code, body)
		}
		var v struct {
			OutPath    string `json:"outPath"`
			Signatures []struct {
				KeyName string `json:"keyName"`
				Sig     string `json:"sig"`
			} `json:"signatures"`
		}
		if err := json.Unmarshal(body, &v); err != nil || v.OutPath != filepath.Base(app) || len(v.Signatures) != 1 || v.Signatures[0].KeyName != "proto-serve-1" {
			t.Errorf("build trace value %s (%v)", body, err)
		}
		// A 2.35 upload (curl-level, the request HttpBinaryCacheStore
		// sends: PUT, Content-Type application/json) is read back.
		other := testenv.BuildDerivation(t, "proto-bt-"+salt, "echo bt > $out")
		testenv.Run(t, "nix", "copy", "--to", srv.URL, other, "--option", "netrc-file", srv.netrc)
		drv := strings.Repeat("0", 32) + "-proto-bt.drv"
		put := `{"outPath":"` + filepath.Base(other) + `","signatures":[]}`
		if code, _, body := srv.request(t, "PUT", "/build-trace-v2/"+drv+"/out.doi", []byte(put), true, "Content-Type", "application/json"); code != 201 {
			t.Fatalf("PUT build-trace-v2: %d %s", code, body)
		}
		if code, h, body := srv.request(t, "GET", "/build-trace-v2/"+drv+"/out.doi", nil, false); code != 200 || !strings.HasPrefix(string(body), `{"outPath":"`+filepath.Base(other)+`","signatures":[{"keyName":"proto-serve-1"`) || h.Get("Content-Type") != "application/json" {
			t.Errorf("GET build-trace-v2: %d %s %s", code, h.Get("Content-Type"), body)
		}
		if code, _, _ := srv.request(t, "HEAD", "/build-trace-v2/"+drv+"/out.doi", nil, false); code != 200 {
			t.Errorf("HEAD build-trace-v2: %d", code)
		}
		if code, _, _ := srv.request(t, "GET", "/build-trace-v2/"+drv+"/dev.doi", nil, false); code != 404 {
			t.Errorf("GET an absent output: %d, want 404", code)
		}
	})

	t.Run("listings", func(t *testing.T) {
		ref := t.TempDir()
		testenv.RunCmd(t, caCmd(t, "nix", "copy", "--to", "file://"+ref+"?write-nar-listing=true", app))
		hash := spec.PathTag(app)
		want, _ := os.ReadFile(filepath.Join(ref, hash+".ls"))
		code, h, got := srv.request(t, "GET", "/"+hash+".ls", nil, false)
		if code != 200 || string(got) != string(want) || h.Get("Content-Type") != "application/json" {
			t.Errorf("GET uploaded listing: %d %s\n%s\nwant\n%s", code, h.Get("Content-Type"), got, want)
		}
		// A path uploaded without a listing: made from its NAR.
		plain := testenv.BuildDerivation(t, "proto-ls-"+salt, "mkdir -p $out/a/b; echo x > $out/a/b/f; ln -s b $out/a/l")
		testenv.Run(t, "nix", "copy", "--to", srv.URL, plain, "--option", "netrc-file", srv.netrc)
		testenv.Run(t, "nix", "copy", "--to", "file://"+ref+"?write-nar-listing=true", plain)
		want, _ = os.ReadFile(filepath.Join(ref, spec.PathTag(plain)+".ls"))
		for i := 0; i < 2; i++ { // made, then kept
			if code, _, got := srv.request(t, "GET", "/"+spec.PathTag(plain)+".ls", nil, false); code != 200 || string(got) != string(want) {
				t.Errorf("GET made listing (%d): %d\n%s\nwant\n%s", i, code, got, want)
			}
		}
	})

	t.Run("debuginfo", func(t *testing.T) {
		id := "abcdef0123456789abcdef0123456789abcdef01"
		for _, name := range []string{id, id + ".debug"} {
			code, _, body := srv.request(t, "GET", "/debuginfo/"+name, nil, false)
			var e struct{ Archive, Member string }
			if code != 200 || json.Unmarshal(body, &e) != nil {
				t.Fatalf("GET debuginfo/%s: %d %s", name, code, body)
			}
			// The archive, relative to debuginfo/, is the NAR holding the member.
			code, _, narXz := srv.request(t, "GET", path.Join("/debuginfo", e.Archive), nil, false)
			if code != 200 {
				t.Fatalf("GET %s: %d", e.Archive, code)
			}
			dec, _ := codec.NewReader(bytes.NewReader(narXz), spec.CompressionXz)
			nr := nar.NewReader(dec)
			found := false
			for {
				hdr, err := nr.Next()
				if err != nil {
					break
				}
				if hdr.Path == "/"+e.Member {
					content, _ := io.ReadAll(nr)
					found = string(content) == "debug symbols "+salt+"\n"
				}
			}
			if !found {
				t.Errorf("debuginfo/%s: member %s not in %s with the debug file's content", name, e.Member, e.Archive)
			}
		}
	})

	t.Run("logs", func(t *testing.T) {
		// A real build's log, copied with copy-log; `nix log --store` of
		// the output reads it through serve (the output's narinfo names
		// its deriver), as on a machine that never built it.
		out := testenv.BuildDerivation(t, "proto-log-"+salt, "echo compiling proto log "+os.Getenv("HOSTNAME")+"; echo ok > $out")
		drv := testenv.Run(t, "nix-store", "--query", "--deriver", out)
		testenv.Run(t, "nix", "copy", "--to", srv.URL, out, "--option", "netrc-file", srv.netrc)
		testenv.Run(t, "nix", "store", "copy-log", "--to", srv.URL, drv, "--option", "netrc-file", srv.netrc)
		got, stderr, err := testenv.RunErr(t, "nix", "log", "--store", srv.URL, out)
		if err != nil || !strings.Contains(got, "compiling proto log") {
			t.Errorf("nix log --store %s %s: %v\n%s%s", srv.URL, out, err, got, stderr)
		}
		if code, h, _ := srv.request(t, "HEAD", "/log/"+filepath.Base(drv), nil, false); code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
			t.Errorf("HEAD log: %d %s", code, h.Get("Content-Type"))
		}
	})

	t.Run("compressed uploads", func(t *testing.T) {
		// As Nix 2.32+ sends them with log-compression and
		// ls-compression: the body compressed, Content-Encoding the
		// method's name (HttpBinaryCacheStore::upsertFile).
		log := bytes.Repeat([]byte("a line of a long build log\n"), 2000)
		for _, enc := range []string{"br", "gzip", "xz", "zstd", "bzip2"} {
			drv := strings.Repeat("1", 32) + "-proto-enc-" + enc + ".drv"
			body := compress(t, enc, log)
			if code, _, b := srv.request(t, "PUT", "/log/"+drv, body, true, "Content-Type", "text/plain; charset=utf-8", "Content-Encoding", enc); code != 201 {
				t.Fatalf("PUT log with Content-Encoding %s: %d %s", enc, code, b)
			}
			code, h, got := srv.request(t, "GET", "/log/"+drv, nil, false)
			if code != 200 || !bytes.Equal(got, log) || h.Get("Content-Encoding") != "" {
				t.Errorf("GET log uploaded with %s: %d, %d bytes, encoding %q", enc, code, len(got), h.Get("Content-Encoding"))
			}
			code, h, got = srv.request(t, "GET", "/log/"+drv, nil, false, "Accept-Encoding", "gzip")
			if code != 200 || h.Get("Content-Encoding") != "gzip" || len(got) >= len(log) {
				t.Errorf("GET log accepting gzip: %d, encoding %q, %d bytes", code, h.Get("Content-Encoding"), len(got))
			}
		}
		if code, _, _ := srv.request(t, "PUT", "/log/"+strings.Repeat("1", 32)+"-x.drv", log, true, "Content-Encoding", "lz4"); code != 415 {
			t.Errorf("PUT with Content-Encoding lz4: %d, want 415", code)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		waitPending(t, srv.served) // the records of earlier uploads written: no tag changes meanwhile
		good := `{"dependentRealisations":{},"id":"sha256:` + strings.Repeat("ab", 32) + `!out","outPath":"` + filepath.Base(app) + `","signatures":[]}`
		for _, tc := range []struct {
			name, path, body string
			want             int
		}{
			{"malformed output path", "/realisations/sha256:" + strings.Repeat("ab", 32) + "!out.doi", strings.Replace(good, filepath.Base(app), "not-a-path", 1), 400},
			{"output path not uploaded", "/realisations/sha256:" + strings.Repeat("ab", 32) + "!out.doi", strings.Replace(good, filepath.Base(app), strings.Repeat("2", 32)+"-absent", 1), 400},
			{"id not the file's", "/realisations/sha256:" + strings.Repeat("cd", 32) + "!out.doi", good, 400},
			{"unparseable listing", "/" + spec.PathTag(app) + ".ls", `{"version":1,"root":`, 400},
			{"traversal in a listing", "/" + spec.PathTag(app) + ".ls", `{"version":1,"root":{"type":"directory","entries":{"..":{"type":"regular","size":1}}}}`, 400},
			{"log not of a derivation", "/log/" + filepath.Base(app), "x", 400},
			{"traversal log name", "/log/..%2F..%2Fetc%2Fpasswd.drv", "x", 400},
			{"traversal build trace", "/build-trace-v2/..%2F" + filepath.Base(appDrv) + "/out.doi", good, 400},
			{"debuginfo member elsewhere", "/debuginfo/" + strings.Repeat("ab", 20), `{"archive":"../nar/` + strings.Repeat("0", 52) + `.nar.xz","member":"../../etc/passwd"}`, 400},
		} {
			before := registryTagsOf(t, srv)
			if code, _, body := srv.request(t, "PUT", tc.path, []byte(tc.body), true); code != tc.want {
				t.Errorf("%s: PUT %s = %d %s, want %d", tc.name, tc.path, code, body, tc.want)
			}
			if after := registryTagsOf(t, srv); after != before {
				t.Errorf("%s: stored something: tags %s -> %s", tc.name, before, after)
			}
		}
		// A 2 GB log, streamed: refused at the limit (413), nothing stored.
		req, _ := http.NewRequest("PUT", srv.URL+"/log/"+strings.Repeat("3", 32)+"-huge.drv", io.LimitReader(zeros{}, 2<<30))
		req.SetBasicAuth("ci", "proto-pw-20")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 413 {
				t.Errorf("2 GB log: %d, want 413", resp.StatusCode)
			}
		}
		if code, _, _ := srv.request(t, "GET", "/log/"+strings.Repeat("3", 32)+"-huge.drv", nil, false); code != 404 {
			t.Errorf("2 GB log stored: GET = %d", code)
		}
	})

	t.Run("gc", func(t *testing.T) {
		// A real build's log uploaded with copy-log stays while a closure
		// holds the path naming its derivation as deriver; after gc
		// removes the path, the log goes too (SPEC.md 12.5).
		out := testenv.BuildDerivation(t, "proto-gc-"+salt, "echo compiling proto gc; echo ok > $out")
		drv := testenv.Run(t, "nix-store", "--query", "--deriver", out)
		testenv.Run(t, "nix", "copy", "--to", srv.URL, out, "--option", "netrc-file", srv.netrc)
		testenv.Run(t, "nix", "store", "copy-log", "--to", srv.URL, drv, "--option", "netrc-file", srv.netrc)
		run(t, "push", "--to", srv.ref, "--tag", "gc-root", out)
		has := func(tag string) bool { return contains(registryTags(t, srv.ref), tag) }
		run(t, "gc", "--grace", "0s", srv.ref)
		if !has(spec.PathTag(out)) || !has(spec.LogTag(drv)) {
			t.Fatalf("gc removed the rooted path or its log: tags %v", registryTags(t, srv.ref))
		}
		run(t, "rm", srv.ref+":gc-root")
		// The path stays while serve's record of uploads reaches it
		// (SPEC.md 14.5): retention drops the records.
		waitMetric(t, srv.URL, `nixoci_serve_recorded_paths_total{kind="uploaded"}`, 1)
		waitPending(t, srv.served)
		gcOut := run(t, "gc", "--match", "uploaded.*", "--keep-none", "--grace", "0s", srv.ref)
		if has(spec.PathTag(out)) || has(spec.LogTag(drv)) {
			t.Errorf("after gc removed the path, its log stayed: tags %v\n%s", registryTags(t, srv.ref), gcOut)
		}
		if !strings.Contains(gcOut, "file") {
			t.Errorf("gc did not list the log it removed:\n%s", gcOut)
		}
	})
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// registryTagsOf lists the tags of serve's registry repository.
func registryTagsOf(t *testing.T, srv *protocolServe) string {
	return strings.Join(registryTags(t, srv.ref), " ")
}

func brotliCompress(data []byte) []byte {
	var b bytes.Buffer
	w := brotli.NewWriterLevel(&b, 5)
	w.Write(data)
	w.Close()
	return b.Bytes()
}

// compress compresses data with the real tool of enc (br: Go's brotli).
func compress(t *testing.T, enc string, data []byte) []byte {
	t.Helper()
	tool := map[string][]string{"gzip": {"gzip", "-c"}, "xz": {"xz", "-c"}, "zstd": {"zstd", "-q", "-c"}, "bzip2": {"bzip2", "-c"}}[enc]
	if tool == nil {
		return brotliCompress(data)
	}
	cmd := testenv.Cmd(t, tool[0], tool[1:]...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", tool[0], err)
	}
	return out
}
