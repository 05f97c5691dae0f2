package conformance

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/spec"
)

// registryPrograms are the registry implementations upload and auth
// tests run against: Debian's docker-registry (distribution 2.8) and
// distribution v3, which has its own upload and auth code.
var registryPrograms = []struct{ name, program string }{
	{"distribution-2.8", "docker-registry"},
	{"distribution-v3", "registry"},
}

// randomClosure builds a store path holding one file of size random
// (incompressible) bytes.
func randomClosure(t *testing.T, name string, size int) string {
	t.Helper()
	return testenv.BuildDerivation(t, name, fmt.Sprintf("mkdir -p $out/share && head -c %d /dev/urandom > $out/share/random", size))
}

// netrcFor writes a netrc giving Nix user and password for the host of url.
func netrcFor(t *testing.T, url, user, password string) string {
	t.Helper()
	host, _, _ := strings.Cut(strings.TrimPrefix(url, "http://"), ":")
	f := filepath.Join(t.TempDir(), "netrc")
	if err := os.WriteFile(f, []byte(fmt.Sprintf("machine %s login %s password %s\n", host, user, password)), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestChunkedUploadThroughProxy: behind nginx with client_max_body_size
// 16m, a closure holding a 200 MB incompressible file is pushed in
// chunks, pulls back identical, substitutes with the real Nix through
// serve, and `nix copy --to` serve --upload stores it through the same
// proxy; without chunks the push fails with the 413 and the flag to set.
func TestChunkedUploadThroughProxy(t *testing.T) {
	const size = 200 << 20
	big := randomClosure(t, "fx-random-200m", size)
	key := testenv.GenerateKey(t, "chunked-1")
	for _, r := range registryPrograms {
		t.Run(r.name, func(t *testing.T) {
			reg := testenv.StartRegistry(t, testenv.RegistryOptions{Program: r.program})
			proxy := testenv.StartNginxProxy(t, reg.Addr, testenv.NginxOptions{MaxBodySize: "16m"})
			run(t, "push", "--to", proxy.Ref("big")+":big", "--sign-key", key.SecretFile, big)
			patches, largest := 0, int64(0)
			for _, req := range proxy.Requests(t) {
				if req.Status == http.StatusRequestEntityTooLarge {
					t.Errorf("nginx answered %s %s with 413", req.Method, req.URI)
				}
				if req.Method == http.MethodPatch {
					patches++
					largest = max(largest, req.Length)
				}
			}
			if min := size / (8 << 20); patches < min || largest > 16<<20 {
				t.Errorf("%d PATCH requests, the largest %d bytes; want at least %d, each under 16 MiB", patches, largest, min)
			}

			cache := t.TempDir()
			run(t, "pull", proxy.Ref("big")+":big", "--to", cache)
			copyAndCompare(t, cache, key.Public, big, []string{big})

			srv := startServe(t, nil, "--from", proxy.Ref("big"))
			store, stderr, err := realise(t, srv.URL, key.Public, big)
			if err != nil {
				t.Fatalf("substituting through serve: %v\n%s", err, stderr)
			}
			testenv.TreesEqual(t, big, filepath.Join(store, big))

			up := startServe(t, nil, "--from", proxy.Ref("up"), "--upload", "--credentials", htpasswdFile(t, "-B", "ci", "up-pw-9"))
			before := len(proxy.Requests(t))
			cmd := testenv.Cmd(t, "nix", "copy", "--to", up.URL+"/?compression=none&secret-key="+key.SecretFile, big,
				"--option", "netrc-file", netrcFor(t, up.URL, "ci", "up-pw-9"))
			testenv.RunCmd(t, cmd)
			upPatches := 0
			for _, req := range proxy.Requests(t)[before:] {
				if req.Method == http.MethodPatch && strings.HasPrefix(req.URI, "/v2/up/") && req.Status == http.StatusAccepted {
					upPatches++
				}
			}
			if upPatches < size/(8<<20) {
				t.Errorf("serve --upload sent %d chunks through the proxy, want at least %d", upPatches, size/(8<<20))
			}
			mustContain(t, "inspect of the uploaded path", run(t, "inspect", proxy.Ref("up")+":"+spec.PathTag(big)), big, "chunked-1")

			stderr, code := runFail(t, "push", "--chunk-size", "0", "--compression", "none", "--to", proxy.Ref("whole")+":w", big)
			if code != 1 {
				t.Errorf("push without chunks: exit %d, want 1", code)
			}
			mustContain(t, "push without chunks", stderr, proxy.Addr+"/whole", "PUT", "413",
				"request body too large for a proxy; upload in smaller chunks", "--chunk-size")
			if tags := registryTags(t, reg.Ref("whole")); len(tags) > 0 {
				t.Errorf("tags after the refused push: %v", tags)
			}
		})
	}
}

// narSize is the NAR size of a store path, as Nix records it.
func narSize(t *testing.T, path string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(testenv.Run(t, "nix-store", "--query", "--size", path), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestChunkedUploadResumes: the fault proxy resets the connection in the
// middle of two chunks; each is resumed from what the registry reports
// (one status request each, the same session, no new upload), the bytes
// sent stay under the blob's size plus two chunks, and the closure's
// digest equals that of a clean push. The registry wants tokens.
func TestChunkedUploadResumes(t *testing.T) {
	const chunk = 4 << 20
	big := randomClosure(t, "fx-random-48m", 48<<20)
	blobSize := narSize(t, big) // --compression none: the blob is the NAR
	for _, r := range registryPrograms {
		t.Run(r.name, func(t *testing.T) {
			// With token auth: every request of the upload, the status
			// requests too, carries a token for the push scope.
			ts := testenv.StartTokenServer(t, testenv.TokenOptions{Users: map[string]testenv.TokenUser{
				"nix": {Password: "resume-pw", Grants: map[string][]string{"*": {"pull", "push"}}}}})
			reg := testenv.StartRegistry(t, testenv.RegistryOptions{Program: r.program, Token: ts})
			push := func(to string, args ...string) string {
				host, _, _ := strings.Cut(to, "/")
				cmd := nixoci(t, append([]string{"push", "--compression", "none", "--to", to}, append(args, big)...)...)
				cmd.Env = append(cmd.Env, "DOCKER_CONFIG="+testenv.DockerConfig(t, host, "nix", "resume-pw"))
				return lastLine(testenv.RunCmd(t, cmd))
			}
			clean := push(reg.Ref("clean") + ":c")
			var patches atomic.Int32
			proxy := testenv.StartFaultProxy(t, reg.Addr, testenv.FaultOptions{Reset: 1, MaxConsecutive: -1,
				Only: func(r *http.Request) bool {
					if r.Method != http.MethodPatch {
						return false
					}
					n := patches.Add(1)
					return n == 4 || n == 9
				}})
			tokens := len(ts.Requests())
			cut := push(proxy.Ref("cut")+":c", "--chunk-size", "4MiB")
			if n := len(ts.Requests()) - tokens; n != 2 {
				t.Errorf("%d token requests for the push through resets, want 2 (pull; pull,push)", n)
			}
			if cut != clean {
				t.Errorf("closure digest through resets %s, clean push %s", cut, clean)
			}
			if c := proxy.Counts(); c[testenv.FaultReset] != 2 {
				t.Fatalf("faults injected: %s, want 2 resets", testenv.FormatCounts(c))
			}
			var sent int64
			posts, statuses := 0, 0
			for _, req := range proxy.Log() {
				if !strings.Contains(req.Path, "/blobs/uploads/") {
					continue
				}
				sent += req.BodyBytes
				switch req.Method {
				case http.MethodPost:
					if req.Status == http.StatusAccepted { // not the challenged first try
						posts++
					}
				case http.MethodGet:
					statuses++
					if req.Status != http.StatusNoContent {
						t.Errorf("status request answered %d, want 204", req.Status)
					}
				}
			}
			t.Logf("blob %d bytes in %d-byte chunks, two chunks cut in half: %d bytes sent (%+d), %d uploads opened, %d status requests",
				blobSize, chunk, sent, sent-blobSize, posts, statuses)
			if sent < blobSize+chunk || sent >= blobSize+2*chunk {
				t.Errorf("%d bytes sent for a %d-byte blob, want at least the blob and the two halves cut (%d), under the blob and two chunks (%d)",
					sent, blobSize, blobSize+chunk, blobSize+2*chunk)
			}
			if statuses != 2 {
				t.Errorf("%d status requests on upload sessions, want 2 (one per reset)", statuses)
			}
			// Uploads opened through the proxy: the NAR's once, and the
			// blobs written with it (narinfo, config, closure), each once.
			if puts := countPuts(proxy.Log()); posts != puts {
				t.Errorf("%d uploads opened for %d blobs stored: an upload started over", posts, puts)
			}
		})
	}
}

// countPuts counts the successful upload PUTs (blobs stored).
func countPuts(log []testenv.ProxyRequest) int {
	n := 0
	for _, req := range log {
		if req.Method == http.MethodPut && strings.Contains(req.Path, "/blobs/uploads/") && req.Status == http.StatusCreated {
			n++
		}
	}
	return n
}

// TestChunkedUploadFallback: behind a proxy that refuses PATCH, a blob
// goes in one request, saying so; when that is too large for the proxy
// as well, the error names both answers.
func TestChunkedUploadFallback(t *testing.T) {
	big := randomClosure(t, "fx-random-48m", 48<<20)
	for _, r := range registryPrograms {
		t.Run(r.name, func(t *testing.T) {
			reg := testenv.StartRegistry(t, testenv.RegistryOptions{Program: r.program})
			open := testenv.StartNginxProxy(t, reg.Addr, testenv.NginxOptions{RefusePatch: true, MaxBodySize: "0"})
			cmd := nixoci(t, "push", "--compression", "none", "--chunk-size", "4MiB", "--to", open.Ref("nix")+":t", big)
			_, stderr, err := testenv.RunCmdErr(cmd)
			if err != nil {
				t.Fatalf("push behind a proxy refusing PATCH: %v", err)
			}
			mustContain(t, "push log", stderr, "refused an upload in chunks; sending the blob in one request", "405")
			var whole bool
			for _, req := range open.Requests(t) {
				whole = whole || req.Method == http.MethodPut && req.Status == http.StatusCreated && req.Length > 48<<20
			}
			if !whole {
				t.Error("no PUT with the whole blob went through the proxy")
			}

			limited := testenv.StartNginxProxy(t, reg.Addr, testenv.NginxOptions{RefusePatch: true, MaxBodySize: "16m"})
			stderr, code := runFail(t, "push", "--compression", "none", "--chunk-size", "4MiB", "--to", limited.Ref("nix2")+":t", big)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			mustContain(t, "push error", stderr, limited.Addr+"/nix2", "does not accept uploads in chunks", "PATCH", "405",
				"in one request instead", "PUT", "413")
		})
	}
}

// TestChunkedUploadSessionLost: a chunk cut short on its way to the
// registry, which stores part of it. Distribution v3 reports the bytes it
// holds and the upload goes on from there, mid-chunk; docker-registry 2.8
// cancels such a session, so the blob is sent again in a new one, once.
// Either way the closure's digest is that of a clean push.
func TestChunkedUploadSessionLost(t *testing.T) {
	const chunk = 4 << 20
	big := randomClosure(t, "fx-random-48m", 48<<20)
	blobSize := narSize(t, big)
	for _, r := range registryPrograms {
		t.Run(r.name, func(t *testing.T) {
			reg := testenv.StartRegistry(t, testenv.RegistryOptions{Program: r.program})
			clean := lastLine(run(t, "push", "--compression", "none", "--to", reg.Ref("clean")+":c", big))
			var patches atomic.Int32
			proxy := testenv.StartFaultProxy(t, reg.Addr, testenv.FaultOptions{Cut: 1, MaxConsecutive: -1,
				Only: func(r *http.Request) bool { return r.Method == http.MethodPatch && patches.Add(1) == 4 }})
			cut := lastLine(run(t, "push", "--compression", "none", "--chunk-size", "4MiB", "--to", proxy.Ref("cut")+":c", big))
			if cut != clean {
				t.Errorf("closure digest after a cut chunk %s, clean push %s", cut, clean)
			}
			if c := proxy.Counts(); c[testenv.FaultCut] != 1 {
				t.Fatalf("faults injected: %s, want 1 cut", testenv.FormatCounts(c))
			}
			var sent int64
			var status []int
			posts := 0
			for _, req := range proxy.Log() {
				if !strings.Contains(req.Path, "/blobs/uploads/") {
					continue
				}
				sent += req.BodyBytes
				switch req.Method {
				case http.MethodGet:
					status = append(status, req.Status)
				case http.MethodPost:
					posts++
				}
			}
			puts := countPuts(proxy.Log())
			t.Logf("blob %d bytes in %d-byte chunks, the 4th cut after half: status answered %v, %d bytes sent (%+d), %d uploads opened for %d blobs",
				blobSize, chunk, status, sent, sent-blobSize, posts, puts)
			switch {
			case len(status) == 1 && status[0] == http.StatusNoContent: // resumed where the registry stopped
				if posts != puts || sent >= blobSize+chunk {
					t.Errorf("resumed: %d uploads for %d blobs, %d bytes sent; want no new upload and under the blob and a chunk", posts, puts, sent)
				}
			case len(status) == 1: // the session is gone: the blob again, once
				if posts != puts+1 || sent < blobSize+3*chunk+chunk/2 || sent >= 2*blobSize+chunk {
					t.Errorf("started over: %d uploads for %d blobs, %d bytes sent; want one more upload, and the cut part and the blob once more", posts, puts, sent)
				}
			default:
				t.Errorf("status requests answered %v, want one", status)
			}
			if r.program == "registry" && (len(status) != 1 || status[0] != http.StatusNoContent) {
				t.Errorf("distribution v3 answered the status request %v; it reported the bytes it held when this test was written", status)
			}
		})
	}
}
