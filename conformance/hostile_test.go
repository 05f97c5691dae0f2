package conformance

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	orasgo "oras.land/oras-go/v2"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/codec"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// hostileRSS bounds serve's peak resident memory (VmHWM of the serve
// process) in every hostile case: a 4 GiB dictionary or 5,000 parts of
// 4 MiB must not be allocated.
const hostileRSS = 200 << 20

// openTarget opens ref with the library, as a registry writer would.
func openTarget(t *testing.T, ref string) backend.Target {
	t.Helper()
	r, err := backend.ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	tg, err := backend.Open(context.Background(), r, backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// pushJSON stores v as a manifest or index of mediaType in tg, tagged tag.
func pushJSON(t *testing.T, tg backend.Target, mediaType string, v any, tag string) ocispec.Descriptor {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := tg.PushReference(context.Background(), d, bytes.NewReader(data), tag); err != nil {
		t.Fatal(err)
	}
	return d
}

// hostileServe runs serve in front of the proxy's repository repo, with
// its own key and the push key trusted, a short backend timeout, and
// extra flags.
func hostileServe(t *testing.T, proxy *testenv.FaultProxy, repo string, serveKey, pushKey testenv.KeyPair, extra ...string) *served {
	return startServe(t, nil, append([]string{"--from", proxy.Ref(repo), "--sign-key", serveKey.SecretFile,
		"--trusted-key", pushKey.Public, "--backend-timeout", "3s", "--blob-cache-size", "0"}, extra...)...)
}

// realiseOnce is realise with Nix's download retries off.
func realiseOnce(t *testing.T, url, publicKey, root string) (string, error) {
	t.Helper()
	cmd := testenv.Cmd(t, "nix-store", "--store", testenv.NewStoreDir(t), "--realise", root,
		"--option", "substituters", url, "--option", "trusted-public-keys", publicKey,
		"--option", "narinfo-cache-negative-ttl", "0", "--option", "narinfo-cache-positive-ttl", "0",
		"--option", "download-attempts", "1")
	_, stderr, err := testenv.RunCmdErr(cmd)
	return stderr, err
}

// narinfoAnswers lists the statuses serve's access log shows for the
// narinfo of hash.
func narinfoAnswers(s *served, hash string) []string {
	re := regexp.MustCompile(`path=/` + hash + `\.narinfo status=(\d+)`)
	var out []string
	for _, m := range re.FindAllStringSubmatch(s.Logs(), -1) {
		out = append(out, m[1])
	}
	return out
}

// checkNarInfo fetches the narinfo of hash from serve: it must be for
// that path, and bear serve's signature only if a trusted key signed
// it. It returns the status and the narinfo (nil unless 200).
func checkNarInfo(t *testing.T, s *served, hash string, serveKey, pushKey narinfo.PublicKey) (int, *narinfo.NarInfo) {
	t.Helper()
	code, body := httpGet(t, s.URL+"/"+hash+".narinfo")
	if code != 200 {
		return code, nil
	}
	info, err := narinfo.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatalf("narinfo of %s: %v\n%s", hash, err, body)
	}
	if spec.PathTag(info.StorePath) != hash {
		t.Errorf("asked for %s, got the narinfo of %s", hash, info.StorePath)
	}
	if serveKey.Verify(info) && !pushKey.Verify(info) {
		t.Errorf("serve signed %s, whose stored signatures do not verify:\n%s", info.StorePath, body)
	}
	return code, info
}

// TestHostileRegistry: a proxy of ours in front of a real docker-registry
// rewrites what it returns, or a registry writer pushes hostile
// artifacts, and the real Nix client substitutes through serve: Nix
// never receives a narinfo for another path than it asked for, serve
// never signs what fails its trust policy, each failure is a 5xx or a
// clear refusal (never a 404), the log names the artifact, and serve's
// peak RSS stays under hostileRSS.
func TestHostileRegistry(t *testing.T) {
	fx := testenv.BuildFixture(t, "hostile")
	pushKey := testenv.GenerateKey(t, "hostile-push-1")
	serveKey := testenv.GenerateKey(t, "hostile-serve-1")
	servePub, _ := narinfo.ParsePublicKey(serveKey.Public)
	pushPub, _ := narinfo.ParsePublicKey(pushKey.Public)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	run(t, "push", "--to", reg.Ref("nix")+":s", "--sign-key", pushKey.SecretFile, fx.App)
	ctx := context.Background()
	tg := openTarget(t, reg.Ref("nix"))
	art := func(p string) (artifact.PathArtifact, []byte) {
		a, data, err := artifact.ResolvePathManifest(ctx, tg, artifact.PathClaim{Hash: spec.PathTag(p)})
		if err != nil {
			t.Fatal(err)
		}
		return a, data
	}
	_, dataManifest := art(fx.Data)
	busybox, busyboxManifest := art(fx.Busybox)
	victim := spec.PathTag(fx.Data)
	isVictimTag := func(r *http.Request) bool {
		return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/manifests/"+victim)
	}
	// Every case ends with serve's memory and the victim's answers.
	finish := func(t *testing.T, s *served) {
		t.Helper()
		for _, code := range narinfoAnswers(s, victim) {
			if code == "404" {
				t.Errorf("serve answered 404 for %s, which the registry holds", fx.Data)
			}
		}
		if rss := peakRSS(t, s); rss > hostileRSS {
			t.Errorf("serve's peak RSS %d MiB, over %d MiB", rss>>20, hostileRSS>>20)
		}
	}

	t.Run("manifest of another path", func(t *testing.T) {
		proxy := testenv.StartFaultProxy(t, reg.Addr, testenv.FaultOptions{Rewrite: func(r *http.Request, resp *http.Response) error {
			if isVictimTag(r) && resp.StatusCode == 200 {
				testenv.ReplaceBody(resp, busyboxManifest)
				resp.Header.Set("Docker-Content-Digest", busybox.Manifest.Digest.String())
			}
			return nil
		}})
		s := hostileServe(t, proxy, "nix", serveKey, pushKey, "--catalog-interval", "0", "--prefetch", "0")
		if stderr, err := realiseOnce(t, s.URL, serveKey.Public, fx.App); err == nil {
			t.Errorf("Nix realised %s with %s's tag naming another path", fx.App, fx.Data)
		} else if !strings.Contains(stderr, victim) {
			t.Logf("Nix: %s", stderr)
		}
		if code, _ := checkNarInfo(t, s, victim, servePub, pushPub); code != http.StatusBadGateway {
			t.Errorf("narinfo of %s: %d, want 502", fx.Data, code)
		}
		mustContain(t, "serve's log", s.Logs(), "artifact refused", busybox.Manifest.Digest.String(), "tag "+victim)
		finish(t, s)
	})

	t.Run("closure entry naming another manifest", func(t *testing.T) {
		// A registry writer pushes a copy of the closure whose entry for
		// fx.Data names busybox's manifest, into a repository of its own
		// (no path tags: found through the catalog).
		_, idxData, err := backend.FetchManifest(ctx, tg, "s")
		if err != nil {
			t.Fatal(err)
		}
		var idx ocispec.Index
		json.Unmarshal(idxData, &idx)
		for i, e := range idx.Manifests {
			if e.Annotations[spec.AnnotationStorePath] == fx.Data {
				idx.Manifests[i].Digest, idx.Manifests[i].Size = busybox.Manifest.Digest, busybox.Manifest.Size
				delete(idx.Manifests[i].Annotations, spec.AnnotationNarInfo)
			}
		}
		pushJSON(t, tg, ocispec.MediaTypeImageIndex, idx, "evil-src")
		if _, err := orasgo.Copy(ctx, tg, "evil-src", openTarget(t, reg.Ref("evil")), "evil", orasgo.DefaultCopyOptions); err != nil {
			t.Fatal(err)
		}
		proxy := testenv.StartFaultProxy(t, reg.Addr, testenv.FaultOptions{})
		s := hostileServe(t, proxy, "evil", serveKey, pushKey, "--prefetch", "0")
		if _, err := realiseOnce(t, s.URL, serveKey.Public, fx.App); err == nil {
			t.Errorf("Nix realised %s through a closure entry naming another manifest", fx.App)
		}
		if code, _ := checkNarInfo(t, s, victim, servePub, pushPub); code != http.StatusBadGateway {
			t.Errorf("narinfo of %s: %d, want 502", fx.Data, code)
		}
		if code, info := checkNarInfo(t, s, spec.PathTag(fx.App), servePub, pushPub); code != 200 || !servePub.Verify(info) {
			t.Errorf("narinfo of %s: %d, want 200 signed by serve", fx.App, code)
		}
		mustContain(t, "serve's log", s.Logs(), "artifact refused", busybox.Manifest.Digest.String(), fx.Data)
		finish(t, s)
	})

	t.Run("NarHash not the NAR's", func(t *testing.T) {
		// The victim's manifest with another NarHash: a valid artifact,
		// whose stored signature no longer verifies.
		var m ocispec.Manifest
		json.Unmarshal(dataManifest, &m)
		m.Annotations[spec.AnnotationNarHash] = busybox.Info.NarHash
		forged, _ := json.Marshal(m)
		proxy := testenv.StartFaultProxy(t, reg.Addr, testenv.FaultOptions{Rewrite: func(r *http.Request, resp *http.Response) error {
			if isVictimTag(r) && resp.StatusCode == 200 {
				testenv.ReplaceBody(resp, forged)
				resp.Header.Set("Docker-Content-Digest", digest.FromBytes(forged).String())
			}
			return nil
		}})
		s := hostileServe(t, proxy, "nix", serveKey, pushKey, "--catalog-interval", "0", "--prefetch", "0")
		if stderr, err := realiseOnce(t, s.URL, serveKey.Public, fx.App); err == nil {
			t.Errorf("Nix realised %s with a forged NarHash", fx.App)
		} else if !strings.Contains(stderr, "signature") && !strings.Contains(stderr, "hash mismatch") {
			t.Logf("Nix: %s", stderr)
		}
		code, info := checkNarInfo(t, s, victim, servePub, pushPub)
		if code != 200 || info.NarHash != busybox.Info.NarHash || servePub.Verify(info) {
			t.Errorf("narinfo of the forged manifest: %d, want 200 without serve's signature", code)
		}
		mustContain(t, "serve's log", s.Logs(), "without the server's signature", digest.FromBytes(forged).String())
		if n := metric(t, s.URL, `nixoci_narinfo_signing_total{decision="unverified"}`); n < 1 {
			t.Errorf("unverified narinfos counted: %v", n)
		}
		finish(t, s)
	})

	t.Run("oversized part list", func(t *testing.T) {
		run(t, "push", "--to", reg.Ref("huge")+":s", "--sign-key", pushKey.SecretFile, fx.App)
		// 5,000 parts (the registry wants them to exist: the same small
		// part each time); a part is 4 MiB at most, so a reader that
		// fetched them all would read up to 20 GiB.
		huge := openTarget(t, reg.Ref("huge"))
		part := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, ArtifactType: spec.ArtifactTypeClosurePartV2, Manifests: []ocispec.Descriptor{},
			Annotations: map[string]string{spec.AnnotationVersion: "2"}}
		part.SchemaVersion = 2
		partData, _ := json.Marshal(part)
		partDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, ArtifactType: spec.ArtifactTypeClosurePartV2,
			Digest: digest.FromBytes(partData), Size: int64(len(partData))}
		if err := huge.Push(ctx, partDesc, bytes.NewReader(partData)); err != nil { // untagged
			t.Fatal(err)
		}
		parts := make([]ocispec.Descriptor, 5000)
		for i := range parts {
			parts[i] = partDesc
		}
		partDigests := map[string]bool{partDesc.Digest.String(): true}
		idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, ArtifactType: spec.ArtifactTypeClosureV2, Manifests: parts,
			Annotations: map[string]string{spec.AnnotationVersion: "2", spec.AnnotationPathCount: "3", spec.AnnotationRoots: fx.App}}
		idx.SchemaVersion = 2
		pushJSON(t, huge, ocispec.MediaTypeImageIndex, idx, "huge")
		proxy := testenv.StartFaultProxy(t, reg.Addr, testenv.FaultOptions{})
		s := hostileServe(t, proxy, "huge", serveKey, pushKey)
		// Paths pushed with their tags substitute; a path no closure read
		// lists is a 5xx, since the refused closure may hold it.
		if stderr, err := realiseOnce(t, s.URL, serveKey.Public, fx.App); err != nil {
			t.Errorf("realising the closure pushed beside the oversized one: %v\n%s", err, stderr)
		}
		if code, _ := httpGet(t, s.URL+"/00000000000000000000000000000000.narinfo"); code < 500 {
			t.Errorf("a path in no closure read: %d, want 5xx", code)
		}
		for _, r := range proxy.Log() {
			if i := strings.LastIndex(r.Path, "/"); partDigests[r.Path[i+1:]] {
				t.Fatalf("serve fetched part %s of the oversized index", r.Path)
			}
		}
		mustContain(t, "serve's log", s.Logs(), "closure huge", "5000 parts")
		finish(t, s)
	})

	t.Run("xz with a 4 GiB dictionary", func(t *testing.T) {
		// A registry writer stores a path whose NAR declares a 4 GiB
		// dictionary; serve decodes NARs to list them (.ls) and to check
		// uploads.
		nar := fixture.NAR(t, "xz bomb "+fx.App)
		var buf bytes.Buffer
		w, _ := codec.NewWriter(&buf, spec.CompressionXz)
		w.Write(nar)
		w.Close()
		bomb := buf.Bytes()
		h := bomb[12:]
		size := (int(h[0]) + 1) * 4
		h[4] = 40 // the LZMA2 dictionary byte: 4 GiB - 1
		binary.LittleEndian.PutUint32(h[size-4:], crc32.ChecksumIEEE(h[:size-4]))
		fileHash := "sha256:" + fixture.Nix32(bomb)
		info := &narinfo.NarInfo{StorePath: fixture.StorePath("xz-bomb-" + spec.PathTag(fx.App)), URL: spec.NarURL(fixture.Nix32(bomb), spec.CompressionXz),
			Compression: "xz", FileHash: fileHash, FileSize: uint64(len(bomb)), NarHash: "sha256:" + fixture.Nix32(nar), NarSize: uint64(len(nar)), References: []string{}}
		if _, err := artifact.StoreArtifact(ctx, tg, info, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(bomb)), nil }); err != nil {
			t.Fatal(err)
		}
		creds := htpasswdFile(t, "-B", "ci", "hostile-pw-4")
		proxy := testenv.StartFaultProxy(t, reg.Addr, testenv.FaultOptions{})
		s := hostileServe(t, proxy, "nix", serveKey, pushKey, "--upload", "--credentials", creds)
		start := time.Now()
		if code, body := httpGet(t, s.URL+"/"+info.HashPart()+".ls"); code < 500 {
			t.Errorf("listing of a NAR declaring a 4 GiB dictionary: %d, want 5xx\n%s", code, body)
		}
		req, _ := http.NewRequest(http.MethodPut, s.URL+"/"+info.URL, bytes.NewReader(bomb))
		req.SetBasicAuth("ci", "hostile-pw-4")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "dictionary") {
			t.Errorf("upload of a NAR declaring a 4 GiB dictionary: %d %s, want 400 naming the dictionary", resp.StatusCode, body)
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("refusing the bombs took %v", d)
		}
		mustContain(t, "serve's log", s.Logs(), info.StorePath, "dictionary")
		finish(t, s)
	})

	t.Run("stalled body", func(t *testing.T) {
		proxy := testenv.StartFaultProxy(t, reg.Addr, testenv.FaultOptions{Stall: 1, StallFor: time.Minute, MaxConsecutive: -1, Only: isVictimTag})
		s := hostileServe(t, proxy, "nix", serveKey, pushKey, "--catalog-interval", "0", "--prefetch", "0")
		done := make(chan error, 1)
		go func() { _, err := realiseOnce(t, s.URL, serveKey.Public, fx.App); done <- err }()
		// Serve keeps answering others meanwhile.
		for range 3 {
			start := time.Now()
			if code, _ := httpGet(t, s.URL+"/"+spec.PathTag(fx.Busybox)+".narinfo"); code != 200 {
				t.Errorf("another path while one stalls: %d", code)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("another path while one stalls took %v", d)
			}
		}
		if err := <-done; err == nil {
			t.Errorf("Nix realised %s while its manifest stalls", fx.App)
		}
		if answers := narinfoAnswers(s, victim); len(answers) == 0 || answers[0] != "504" {
			t.Errorf("answers for the stalled path: %v, want 504", answers)
		}
		mustContain(t, "serve's log", s.Logs(), "narinfo "+victim, "deadline")
		finish(t, s)
	})
}
