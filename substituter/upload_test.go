package substituter_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/codec"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
	"github.com/nixoci/nixoci/substituter"
)

const (
	testUser     = "alice"
	testPassword = "pa55-Secret-9f3kq"
)

func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

var goodAuth = []string{"Authorization", basicAuth(testUser, testPassword)}

// uploadServer serves l with uploads enabled for testUser.
func uploadServer(t *testing.T, l *backend.Layout, opts substituter.Options) (*substituter.Server, *syncBuffer) {
	t.Helper()
	if opts.Backends == nil {
		opts.Backends = backends(l)
	}
	if opts.Upload == nil {
		opts.Upload = &substituter.UploadOptions{
			Credentials: testCredentials(t, testUser, testPassword, "bob", "bobs-other-password"),
			TempDir:     t.TempDir(),
		}
	}
	return newServer(t, opts)
}

// blobs lists the blob files of a layout.
func blobs(t *testing.T, l *backend.Layout) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(l.Dir(), "blobs", "sha256"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// narinfoText is p's narinfo as Nix uploads it.
func narinfoText(t testing.TB, p *testPath) string {
	t.Helper()
	data, err := p.Info.Format()
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func put(t *testing.T, s http.Handler, path string, body []byte, header ...string) response {
	t.Helper()
	return do(t, s, http.MethodPut, path, bytes.NewReader(body), header...)
}

func TestUploadNeedsCredentials(t *testing.T) {
	l := newLayout(t)
	for _, creds := range []*substituter.Credentials{nil, {}} {
		_, err := substituter.New(substituter.Options{Backends: backends(l), Upload: &substituter.UploadOptions{Credentials: creds}})
		if !errors.Is(err, substituter.ErrNoCredentials) {
			t.Errorf("New with credentials %v: %v, want ErrNoCredentials", creds, err)
		}
	}
}

func TestUploadAuth(t *testing.T) {
	l := newLayout(t)
	p := newTestPath(t, "auth-1", "auth", spec.CompressionZstd)
	s, _ := uploadServer(t, l, substituter.Options{})
	for _, tc := range []struct {
		name string
		auth []string
		want int
	}{
		{"none", nil, 401},
		{"wrong password", []string{"Authorization", basicAuth(testUser, "wrong")}, 401},
		{"empty password", []string{"Authorization", basicAuth(testUser, "")}, 401},
		{"password prefix", []string{"Authorization", basicAuth(testUser, testPassword[:5])}, 401},
		{"password with suffix", []string{"Authorization", basicAuth(testUser, testPassword+"x")}, 401},
		{"another user's password", []string{"Authorization", basicAuth("bob", testPassword)}, 401},
		{"unknown user", []string{"Authorization", basicAuth("mallory", testPassword)}, 401},
		{"user case", []string{"Authorization", basicAuth("Alice", testPassword)}, 401},
		{"bearer", []string{"Authorization", "Bearer " + testPassword}, 401},
		{"garbage", []string{"Authorization", "Basic !!!"}, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{p.NarURLPath(), p.NarInfoPath(), "/nix-cache-info"} {
				before := blobs(t, l)
				r := put(t, s, path, p.File, tc.auth...)
				if r.Code != tc.want {
					t.Errorf("PUT %s = %d, want %d", path, r.Code, tc.want)
				}
				if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Basic ") {
					t.Errorf("PUT %s: WWW-Authenticate %q", path, r.Header.Get("WWW-Authenticate"))
				}
				if after := blobs(t, l); !slices.Equal(before, after) {
					t.Errorf("unauthorised PUT %s stored %v", path, after)
				}
			}
		})
	}
	// The right credentials, for either user.
	if r := put(t, s, "/nix-cache-info", []byte("StoreDir: /nix/store\n"), goodAuth...); r.Code != http.StatusNoContent {
		t.Errorf("PUT nix-cache-info = %d, want 204: %s", r.Code, r.Body)
	}
	if r := put(t, s, "/nix-cache-info", nil, "Authorization", basicAuth("bob", "bobs-other-password")); r.Code != http.StatusNoContent {
		t.Errorf("PUT nix-cache-info as bob = %d, want 204", r.Code)
	}
	// Reads need no credentials.
	if r := get(t, s, "/nix-cache-info"); r.Code != 200 {
		t.Errorf("GET with uploads on: %d", r.Code)
	}
	// Nothing else can be uploaded.
	for _, path := range []string{"/index.html", "/" + p.Hash + ".ls", "/nar/x.nar"} {
		if r := put(t, s, path, []byte("x"), goodAuth...); r.Code != 404 && r.Code != 400 {
			t.Errorf("PUT %s = %d, want 404 or 400", path, r.Code)
		}
	}
	if r := put(t, s, "/log/x", []byte("x"), goodAuth...); r.Code != 400 {
		t.Errorf("PUT /log/x = %d", r.Code)
	}
}

func TestUploadDisabled(t *testing.T) {
	l := newLayout(t)
	p := newTestPath(t, "off-1", "off", spec.CompressionZstd)
	s, _ := newServer(t, substituter.Options{Backends: backends(l)})
	for _, path := range []string{p.NarURLPath(), p.NarInfoPath(), "/nix-cache-info"} {
		if r := put(t, s, path, p.File, goodAuth...); r.Code != http.StatusForbidden {
			t.Errorf("PUT %s without uploads = %d, want 403", path, r.Code)
		}
	}
	if b := blobs(t, l); len(b) != 0 {
		t.Errorf("stored %v", b)
	}
}

func TestUploadNAR(t *testing.T) {
	l := newLayout(t)
	p := newTestPath(t, "upnar-1", "upnar", spec.CompressionZstd)
	q := newTestPath(t, "upnar-2", "other", spec.CompressionZstd)
	s, _ := uploadServer(t, l, substituter.Options{})

	junk := []byte("this is not a NAR, but it has the right name")
	junkZstd := compress(t, junk, spec.CompressionZstd)
	for _, tc := range []struct {
		name string
		path string
		body []byte
	}{
		{"content hashes differently", p.NarURLPath(), q.File},
		{"empty body", p.NarURLPath(), nil},
		{"not a NAR, right hash", "/nar/" + nix32(junk) + ".nar", junk},
		{"compressed non-NAR, right hash", "/nar/" + nix32(junkZstd) + ".nar.zst", junkZstd},
		{"not zstd, right hash", "/nar/" + nix32(p.NAR) + ".nar.zst", p.NAR},
		{"zstd named xz", "/nar/" + p.FileNix32() + ".nar.xz", p.File},
		{"truncated NAR", "/nar/" + nix32(p.NAR[:len(p.NAR)-8]) + ".nar", p.NAR[:len(p.NAR)-8]},
		{"malformed name", "/nar/" + p.FileNix32()[1:] + ".nar.zst", p.File},
		{"unknown extension", "/nar/" + p.FileNix32() + ".nar.gz", p.File},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := blobs(t, l)
			if r := put(t, s, tc.path, tc.body, goodAuth...); r.Code != 400 {
				t.Errorf("PUT %s = %d, want 400: %s", tc.path, r.Code, r.Body)
			}
			if after := blobs(t, l); !slices.Equal(before, after) {
				t.Errorf("a refused NAR was stored: %v -> %v", before, after)
			}
		})
	}

	// Too large: refused, not stored.
	small, _ := uploadServer(t, l, substituter.Options{Upload: &substituter.UploadOptions{
		Credentials: testCredentials(t, testUser, testPassword), MaxNARSize: 100, TempDir: t.TempDir()}})
	if r := put(t, small, p.NarURLPath(), p.File, goodAuth...); r.Code < 400 || r.Code >= 500 {
		t.Errorf("NAR over MaxNARSize = %d, want 4xx", r.Code)
	}
	if b := blobs(t, l); len(b) != 0 {
		t.Errorf("stored %v", b)
	}

	// A good NAR, twice.
	for i := range 2 {
		if r := put(t, s, p.NarURLPath(), p.File, goodAuth...); r.Code != http.StatusCreated {
			t.Fatalf("PUT NAR #%d = %d: %s", i, r.Code, r.Body)
		}
	}
	if b := blobs(t, l); len(b) != 1 || b[0] != p.FileDigest().Encoded() {
		t.Errorf("blobs after a NAR upload: %v, want %s", b, p.FileDigest().Encoded())
	}
	// It is not a path yet: no narinfo, no tag.
	if r := get(t, s, p.NarInfoPath()); r.Code != 404 {
		t.Errorf("narinfo before its upload: %d", r.Code)
	}
}

// TestUploadNARTrailingData: a NAR file must be one NAR and nothing
// after it.
func TestUploadNARTrailingData(t *testing.T) {
	l := newLayout(t)
	s, _ := uploadServer(t, l, substituter.Options{})
	n := makeNAR(t, "trailing")
	for _, comp := range []spec.Compression{spec.CompressionNone, spec.CompressionZstd} {
		body := compress(t, append(slices.Clone(n), "trailing junk"...), comp)
		path := "/" + spec.NarURL(nix32(body), comp)
		if r := put(t, s, path, body, goodAuth...); r.Code != 400 {
			t.Errorf("%s: NAR with trailing data = %d, want 400", comp, r.Code)
		}
	}
}

func TestUploadNarInfo(t *testing.T) {
	l := newLayout(t)
	dep := newTestPath(t, "updep-1", "dep", spec.CompressionXz)
	app := newTestPath(t, "upapp-1", "app", spec.CompressionZstd, dep)
	s, _ := uploadServer(t, l, substituter.Options{})

	// Before anything: the narinfo is absent (and that is remembered, for
	// the default NegativeTTL of seconds).
	if r := get(t, s, app.NarInfoPath()); r.Code != 404 {
		t.Fatalf("GET before upload: %d", r.Code)
	}

	// The narinfo of a NAR never uploaded.
	if r := put(t, s, app.NarInfoPath(), []byte(narinfoText(t, app)), goodAuth...); r.Code != 400 {
		t.Errorf("narinfo without its NAR = %d, want 400", r.Code)
	}
	if r := put(t, s, app.NarURLPath(), app.File, goodAuth...); r.Code != 201 {
		t.Fatalf("PUT app NAR = %d: %s", r.Code, r.Body)
	}
	// Its reference is not uploaded yet.
	before := blobs(t, l)
	if r := put(t, s, app.NarInfoPath(), []byte(narinfoText(t, app)), goodAuth...); r.Code != 400 || !strings.Contains(r.Body, "reference") {
		t.Errorf("narinfo with a missing reference = %d, want 400: %s", r.Code, r.Body)
	}
	if after := blobs(t, l); !slices.Equal(before, after) {
		t.Errorf("a refused narinfo stored blobs: %v -> %v", before, after)
	}

	// Narinfos that do not match what was uploaded.
	for _, tc := range []struct {
		name string
		path string
		edit func(*narinfo.NarInfo)
	}{
		{"other NarHash", app.NarInfoPath(), func(n *narinfo.NarInfo) { n.NarHash = dep.Info.NarHash }},
		{"other NarSize", app.NarInfoPath(), func(n *narinfo.NarInfo) { n.NarSize++ }},
		{"other FileSize", app.NarInfoPath(), func(n *narinfo.NarInfo) { n.FileSize++ }},
		{"other compression", app.NarInfoPath(), func(n *narinfo.NarInfo) { n.Compression = "xz" }},
		{"bzip2", app.NarInfoPath(), func(n *narinfo.NarInfo) { n.Compression = "bzip2" }},
		{"no FileHash", app.NarInfoPath(), func(n *narinfo.NarInfo) { n.FileHash = ""; n.FileSize = 0 }},
		{"another path's name", dep.NarInfoPath(), func(*narinfo.NarInfo) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info := *app.Info
			info.References = []string{} // rule out the missing reference
			tc.edit(&info)
			text, err := info.Format()
			if err != nil {
				t.Fatal(err)
			}
			if r := put(t, s, tc.path, text, goodAuth...); r.Code != 400 {
				t.Errorf("PUT = %d, want 400: %s", r.Code, r.Body)
			}
		})
	}
	if r := put(t, s, app.NarInfoPath(), []byte("not a narinfo\n"), goodAuth...); r.Code != 400 {
		t.Errorf("garbage narinfo = %d, want 400", r.Code)
	}

	// The reference first, then the path.
	for _, step := range []struct {
		path string
		body []byte
	}{
		{dep.NarURLPath(), dep.File},
		{dep.NarInfoPath(), []byte(narinfoText(t, dep))},
		{app.NarInfoPath(), []byte(narinfoText(t, app))},
	} {
		if r := put(t, s, step.path, step.body, goodAuth...); r.Code != http.StatusCreated {
			t.Fatalf("PUT %s = %d, want 201: %s", step.path, r.Code, r.Body)
		}
	}
	// Served at once (the 404 seen before is forgotten), as uploaded.
	r := get(t, s, app.NarInfoPath())
	if r.Code != 200 || r.Body != narinfoText(t, app) {
		t.Errorf("GET uploaded narinfo: %d\n%s\nwant\n%s", r.Code, r.Body, narinfoText(t, app))
	}
	if r := get(t, s, app.NarURLPath()); r.Code != 200 || r.Body != string(app.File) {
		t.Errorf("GET uploaded NAR: %d", r.Code)
	}
	// Stored as `nixoci push` stores it: tagged, with the same manifest.
	for _, p := range []*testPath{dep, app} {
		desc, err := l.Resolve(context.Background(), p.Hash)
		if err != nil {
			t.Fatalf("tag %s: %v", p.Hash, err)
		}
		want := p.store(t, newLayout(t))
		if desc.Digest != want.Manifest.Digest {
			t.Errorf("%s: uploaded manifest %s, push writes %s", p.Name, desc.Digest, want.Manifest.Digest)
		}
	}

	// A fresh server (restarted: it has not seen the NAR upload) accepts
	// a narinfo whose NAR is stored already.
	other := newTestPath(t, "upapp-2", "app", spec.CompressionZstd) // same NAR as app
	s2, _ := uploadServer(t, l, substituter.Options{})
	if r := put(t, s2, other.NarInfoPath(), []byte(narinfoText(t, other)), goodAuth...); r.Code != http.StatusCreated {
		t.Errorf("narinfo of a NAR stored before = %d, want 201: %s", r.Code, r.Body)
	}
	// ... but checks it against the stored NAR.
	bad := *other.Info
	bad.StorePath = storePathOf("upapp-3")
	bad.NarSize++
	text, _ := bad.Format()
	if r := put(t, s2, "/"+hashPart("upapp-3")+".narinfo", text, goodAuth...); r.Code != 400 {
		t.Errorf("narinfo not matching the stored NAR = %d, want 400", r.Code)
	}
}

// TestUploadSelfReference: a path may refer to itself without being
// uploaded first.
func TestUploadSelfReference(t *testing.T) {
	l := newLayout(t)
	p := newTestPath(t, "self-1", "self", spec.CompressionZstd)
	p.Info.References = []string{filepath.Base(p.StorePath)}
	s, _ := uploadServer(t, l, substituter.Options{})
	if r := put(t, s, p.NarURLPath(), p.File, goodAuth...); r.Code != 201 {
		t.Fatal(r.Code, r.Body)
	}
	if r := put(t, s, p.NarInfoPath(), []byte(narinfoText(t, p)), goodAuth...); r.Code != 201 {
		t.Errorf("self-referencing narinfo = %d: %s", r.Code, r.Body)
	}
}

// TestUploadUnreachableBackend: a backend failure during an upload is a
// 5xx, not a client error.
func TestUploadUnreachableBackend(t *testing.T) {
	p := newTestPath(t, "upfail-1", "upfail", spec.CompressionZstd)
	s, _ := uploadServer(t, nil, substituter.Options{Backends: backends(&failing{})})
	if r := put(t, s, p.NarURLPath(), p.File, goodAuth...); r.Code < 500 {
		t.Errorf("PUT NAR to an unreachable backend = %d, want 5xx", r.Code)
	}
}

// TestUploadKeepsStoredPath: a repository holds one artifact per store
// path (SPEC section 4); an upload must not swap a stored path's NAR for
// another.
func TestUploadKeepsStoredPath(t *testing.T) {
	l := newLayout(t)
	orig := newTestPath(t, "keep-1", "original", spec.CompressionZstd)
	orig.store(t, l)
	evil := newTestPath(t, "keep-1", "replacement", spec.CompressionZstd)
	s, _ := uploadServer(t, l, substituter.Options{})
	if r := put(t, s, evil.NarURLPath(), evil.File, goodAuth...); r.Code != 201 {
		t.Fatal(r.Code, r.Body)
	}
	put(t, s, evil.NarInfoPath(), []byte(narinfoText(t, evil)), goodAuth...)
	r := get(t, s, orig.NarInfoPath())
	if !strings.Contains(r.Body, "NarHash: "+orig.Info.NarHash+"\n") {
		t.Errorf("stored path replaced by an upload:\n%s", r.Body)
	}
}

// TestCredentialsNotLeaked: passwords and their hashes never reach logs
// or metrics, even from failed attempts.
func TestCredentialsNotLeaked(t *testing.T) {
	l := newLayout(t)
	p := newTestPath(t, "leak-1", "leak", spec.CompressionZstd)
	htpasswd := testHtpasswd(t, testUser, testPassword, "bob", "bobs-other-password")
	creds, err := substituter.ParseCredentials(strings.NewReader(htpasswd), "test")
	if err != nil {
		t.Fatal(err)
	}
	s, logs := uploadServer(t, l, substituter.Options{AccessLog: true, Upload: &substituter.UploadOptions{Credentials: creds, TempDir: t.TempDir()}})
	wrongPassword := "Wr0ng-" + testPassword
	put(t, s, p.NarURLPath(), p.File, "Authorization", basicAuth(testUser, wrongPassword))
	put(t, s, p.NarURLPath(), p.File, "Authorization", basicAuth(testPassword, testPassword))
	put(t, s, p.NarURLPath(), q(p.File), goodAuth...)
	put(t, s, p.NarInfoPath(), []byte("garbage"), goodAuth...)
	put(t, s, p.NarURLPath(), p.File, goodAuth...)
	put(t, s, p.NarInfoPath(), []byte(narinfoText(t, p)), goodAuth...)
	put(t, s, "/nix-cache-info", nil, goodAuth...)
	get(t, s, p.NarInfoPath(), goodAuth...)
	metrics := get(t, s, "/metrics").Body
	out := logs.String()
	if !strings.Contains(out, "upload refused") {
		t.Errorf("refused uploads not logged:\n%s", out)
	}
	encoded := strings.TrimPrefix(goodAuth[1], "Basic ")
	secrets := []string{testPassword, wrongPassword, encoded, "bobs-other-password"}
	for _, line := range strings.Fields(htpasswd) {
		_, hash, _ := strings.Cut(line, ":")
		secrets = append(secrets, hash, hash[7:29]) // the hash, its salt
	}
	for _, secret := range secrets {
		if strings.Contains(out, secret) {
			t.Errorf("log contains a credential %q:\n%s", secret, out)
		}
		if strings.Contains(metrics, secret) {
			t.Errorf("metrics contain a credential %q", secret)
		}
	}
}

// q returns data with its first byte changed.
func q(data []byte) []byte {
	c := slices.Clone(data)
	c[0] ^= 1
	return c
}

// withSkippableFrame returns a copy of p whose NAR file ends in a zstd
// skippable frame holding payload: decoders skip it, so the file holds
// the same NAR, and two payloads of one length give two files of one
// length that differ only in their bytes.
func withSkippableFrame(t *testing.T, p *testPath, payload string) *testPath {
	t.Helper()
	if p.Comp != spec.CompressionZstd {
		t.Fatalf("withSkippableFrame: %s is %s, not zstd", p.Name, p.Comp)
	}
	frame := binary.LittleEndian.AppendUint32(nil, 0x184D2A50) // skippable frame magic
	frame = binary.LittleEndian.AppendUint32(frame, uint32(len(payload)))
	c := *p
	c.File = append(slices.Clone(p.File), append(frame, payload...)...)
	info := *p.Info
	fileHash, err := narinfo.HashFromHex(hexSHA256(c.File))
	if err != nil {
		t.Fatal(err)
	}
	info.FileHash, info.FileSize, info.URL = fileHash, uint64(len(c.File)), spec.NarURL(nix32(c.File), c.Comp)
	c.Info = &info
	return &c
}

func decompress(t *testing.T, data []byte, c spec.Compression) []byte {
	t.Helper()
	r, err := codec.NewReader(bytes.NewReader(data), c)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestUploadRefusesCorruptStoredNAR: a NAR blob stored under the digest a
// narinfo names but holding other bytes (here: the same NAR in another
// encoding of the same length, so only the digest tells them apart) is
// never committed to, whether the client uploads the NAR again first (as
// nix copy does) or only the narinfo (as after a server restart).
func TestUploadRefusesCorruptStoredNAR(t *testing.T) {
	base := newTestPath(t, "corrupt-stored-1", "corrupt stored", spec.CompressionZstd)
	p := withSkippableFrame(t, base, "original")
	corrupt := withSkippableFrame(t, base, "CORRUPT!").File
	if got := decompress(t, corrupt, spec.CompressionZstd); !bytes.Equal(got, p.NAR) {
		t.Fatal("the corrupt blob does not hold the same NAR: the test would not isolate the digest check")
	}
	for _, tc := range []struct {
		name   string
		putNAR bool
	}{
		{"narinfo only", false},
		{"NAR then narinfo", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLayout(t)
			blobFile := filepath.Join(l.Dir(), "blobs", "sha256", p.FileDigest().Encoded())
			if err := os.MkdirAll(filepath.Dir(blobFile), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(blobFile, corrupt, 0o444); err != nil {
				t.Fatal(err)
			}
			s, logs := uploadServer(t, l, substituter.Options{})
			if tc.putNAR {
				r := put(t, s, p.NarURLPath(), p.File, goodAuth...)
				if r.Code < 500 || !strings.Contains(r.Body, p.FileDigest().String()) {
					t.Errorf("PUT NAR over a corrupt stored blob = %d %q, want 5xx naming %s", r.Code, r.Body, p.FileDigest())
				}
			}
			r := put(t, s, p.NarInfoPath(), []byte(narinfoText(t, p)), goodAuth...)
			if r.Code < 400 {
				t.Errorf("PUT narinfo over a corrupt stored NAR = %d, want it refused", r.Code)
			}
			if !strings.Contains(r.Body, p.FileDigest().String()) || !strings.Contains(r.Body, "corrupt") {
				t.Errorf("refusal does not say which stored blob is corrupt: %q", r.Body)
			}
			if desc, err := l.Resolve(context.Background(), p.Hash); err == nil {
				t.Errorf("a narinfo was committed over a corrupt NAR: tag %s -> %s\n%s", p.Hash, desc.Digest, logs)
			}
			if r := get(t, s, p.NarInfoPath()); r.Code != http.StatusNotFound {
				t.Errorf("GET narinfo after the refusal = %d, want 404", r.Code)
			}
		})
	}
}

// TestUploadKeepsStoredSignaturesAndNAR: a re-upload of a stored path
// with the same NarHash may add signatures, never remove them or change
// the stored NAR (SPEC.md section 4): stored zstd and signed, re-uploaded
// as xz with another signature only.
func TestUploadKeepsStoredSignaturesAndNAR(t *testing.T) {
	l := newLayout(t)
	stored := newTestPath(t, "resign-1", "resign", spec.CompressionZstd)
	stored.store(t, l)
	again := newTestPath(t, "resign-1", "resign", spec.CompressionXz)
	other := testKey("uploader-2", 21)
	again.Info.Sigs = nil
	if err := again.Info.AddSignature(other); err != nil {
		t.Fatal(err)
	}
	s, _ := uploadServer(t, l, substituter.Options{})
	if r := put(t, s, again.NarURLPath(), again.File, goodAuth...); r.Code != 201 {
		t.Fatal(r.Code, r.Body)
	}
	if r := put(t, s, again.NarInfoPath(), []byte(narinfoText(t, again)), goodAuth...); r.Code != 201 {
		t.Fatalf("re-upload = %d: %s", r.Code, r.Body)
	}
	r := get(t, s, stored.NarInfoPath())
	got, err := narinfo.Parse(strings.NewReader(r.Body))
	if err != nil {
		t.Fatalf("GET: %d %v\n%s", r.Code, err, r.Body)
	}
	if got.Compression != "zstd" || got.URL != stored.Info.URL || got.FileHash != stored.Info.FileHash {
		t.Errorf("the stored NAR was replaced: Compression %s, URL %s", got.Compression, got.URL)
	}
	for _, k := range []narinfo.SecretKey{storedKey, other} {
		if !k.Public().Verify(got) {
			t.Errorf("no valid signature by %s in %v", k.Name, got.Sigs)
		}
	}
	if len(got.Sigs) != 2 {
		t.Errorf("Sigs %v, want the stored one and the uploaded one", got.Sigs)
	}
	// A fresh server reads the same from the backend.
	s2, _ := newServer(t, substituter.Options{Backends: backends(l)})
	if r2 := get(t, s2, stored.NarInfoPath()); r2.Body != r.Body {
		t.Errorf("stored narinfo:\n%s\nserved after the upload:\n%s", r2.Body, r.Body)
	}
}

// TestUploadTellsStored: a path stored through an upload is told to
// Options.Stored (the hook for retention records), once it is stored.
func TestUploadTellsStored(t *testing.T) {
	l := newLayout(t)
	p := newTestPath(t, "told-1", "told", spec.CompressionZstd)
	var got []substituter.StoredPath
	s, _ := uploadServer(t, l, substituter.Options{Stored: func(sp substituter.StoredPath) { got = append(got, sp) }})
	if r := put(t, s, p.NarURLPath(), p.File, goodAuth...); r.Code != 201 {
		t.Fatal(r.Code, r.Body)
	}
	if len(got) != 0 {
		t.Fatalf("Stored told of a NAR alone: %+v", got)
	}
	if r := put(t, s, p.NarInfoPath(), []byte(narinfoText(t, p)), goodAuth...); r.Code != 201 {
		t.Fatal(r.Code, r.Body)
	}
	if len(got) != 1 || got[0].From != "upload" || got[0].Path.Info.StorePath != p.StorePath {
		t.Fatalf("Stored told %+v, want the uploaded path", got)
	}
	if _, err := artifact.FetchPathByHash(t.Context(), l, p.Hash); err != nil {
		t.Errorf("told before it was stored: %v", err)
	}
}

// TestUploadOfPathStoredMeanwhile: a path another replica stored after
// this server answered 404 for it, uploaded again with nothing to add,
// is found at once: the "not found" remembered is dropped, or Nix would
// refuse to upload the paths referring to it.
func TestUploadOfPathStoredMeanwhile(t *testing.T) {
	l := newLayout(t)
	p := newTestPath(t, "meanwhile", "meanwhile", spec.CompressionZstd)
	s, _ := uploadServer(t, l, substituter.Options{})
	if r := get(t, s, p.NarInfoPath()); r.Code != 404 {
		t.Fatalf("before: %d", r.Code)
	}
	p.store(t, l) // another replica
	if r := put(t, s, p.NarURLPath(), p.File, goodAuth...); r.Code != 201 {
		t.Fatal(r.Code, r.Body)
	}
	if r := put(t, s, p.NarInfoPath(), []byte(narinfoText(t, p)), goodAuth...); r.Code != 201 {
		t.Fatal(r.Code, r.Body)
	}
	if r := get(t, s, p.NarInfoPath()); r.Code != 200 {
		t.Errorf("after the upload: %d, want 200", r.Code)
	}
}
