package narinfo

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const exampleFingerprint = "1;/nix/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a;" +
	"sha256:1gfqn9ffzch123l95qr52w84km7q2qs00vjsqhr2qac5vnyzb8iy;616;" +
	"/nix/store/815rmnjvs2y7wkiqzyz3xaxaldh7sb7s-fx-busybox," +
	"/nix/store/dc7cd44vbv9zcm8ssgc3l5xqhizicrxk-fx-data-a"

// testKey returns a deterministic secret key named name.
func testKey(name string, seed byte) SecretKey {
	return SecretKey{Name: name, Key: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))}
}

func TestFingerprint(t *testing.T) {
	n := mustParse(t, nix28Example)
	got, err := n.Fingerprint()
	if err != nil || got != exampleFingerprint {
		t.Fatalf("Fingerprint = %q, %v\nwant %q", got, err, exampleFingerprint)
	}

	// References are sorted, hashes normalised, and nothing else counts.
	n.References[0], n.References[1] = n.References[1], n.References[0]
	n.NarHash = "sha256-" + exampleNarHashB64
	n.URL, n.Compression, n.Sigs, n.Extra = "", "", nil, []Field{{"X", "y"}}
	if got, err := n.Fingerprint(); err != nil || got != exampleFingerprint {
		t.Errorf("Fingerprint after changes = %q, %v\nwant %q", got, err, exampleFingerprint)
	}

	// Another store directory is used for the references too.
	n = valid()
	n.StorePath = "/gnu/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-x"
	n.References = []string{"cl0ai7xw811mpinmj9bg20gvr0k8ibg7-x"}
	want := "1;/gnu/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-x;" + exampleNarHash + ";616;/gnu/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-x"
	if got, err := n.Fingerprint(); err != nil || got != want {
		t.Errorf("Fingerprint = %q, %v\nwant %q", got, err, want)
	}

	for name, modify := range map[string]func(*NarInfo){
		"no NarSize":    func(n *NarInfo) { n.NarSize = 0 },
		"bad NarHash":   func(n *NarInfo) { n.NarHash = "sha256:x" },
		"bad reference": func(n *NarInfo) { n.References = []string{"x,y"} },
		"bad StorePath": func(n *NarInfo) { n.StorePath = "/nix/store/x;y" },
	} {
		n := valid()
		modify(n)
		if fp, err := n.Fingerprint(); err == nil {
			t.Errorf("%s: Fingerprint = %q, want error", name, fp)
		}
	}
}

func TestSignVerify(t *testing.T) {
	k1, k2 := testKey("cache-1", 1), testKey("cache-2", 2)
	n := mustParse(t, nix28Example)
	n.Sigs = nil

	if k1.Public().Verify(n) {
		t.Fatal("unsigned narinfo verifies")
	}
	if err := n.AddSignature(k1); err != nil {
		t.Fatal(err)
	}
	if !k1.Public().Verify(n) {
		t.Fatal("signature does not verify")
	}
	if k2.Public().Verify(n) {
		t.Error("verifies with the wrong key")
	}
	// A different key under the signer's name must not verify either.
	if (PublicKey{Name: "cache-1", Key: k2.Public().Key}).Verify(n) {
		t.Error("verifies with the wrong key under the right name")
	}
	// Nor the right key under another name.
	if (PublicKey{Name: "cache-2", Key: k1.Public().Key}).Verify(n) {
		t.Error("verifies with the right key under the wrong name")
	}

	// The signature is the fingerprint's, and survives Format and Parse.
	sig, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(n.Sigs[0], "cache-1:"))
	if err != nil || !ed25519.Verify(k1.Public().Key, []byte(exampleFingerprint), sig) {
		t.Errorf("Sig %q is not a signature of the fingerprint", n.Sigs[0])
	}
	if !k1.Public().Verify(mustParse(t, mustFormat(t, n))) {
		t.Error("signature does not verify after Format and Parse")
	}

	// Several signatures: each key verifies, VerifyAny with any of them.
	if err := n.AddSignature(k2); err != nil {
		t.Fatal(err)
	}
	n.Sigs = append([]string{"other:" + base64.StdEncoding.EncodeToString(make([]byte, 64))}, n.Sigs...)
	if len(n.Sigs) != 3 || !k1.Public().Verify(n) || !k2.Public().Verify(n) {
		t.Errorf("with several signatures %q, a key fails to verify", n.Sigs)
	}
	if !VerifyAny(n, []PublicKey{testKey("x", 3).Public(), k2.Public()}) {
		t.Error("VerifyAny with one good key = false")
	}
	if VerifyAny(n, []PublicKey{testKey("cache-1", 3).Public(), testKey("cache-2", 4).Public()}) {
		t.Error("VerifyAny with wrong keys = true")
	}
	if VerifyAny(n, nil) {
		t.Error("VerifyAny with no keys = true")
	}
}

func TestVerifyTampered(t *testing.T) {
	k := testKey("cache-1", 1)
	signed := mustParse(t, nix28Example)
	if err := signed.AddSignature(k); err != nil {
		t.Fatal(err)
	}
	for name, tamper := range map[string]func(*NarInfo){
		"StorePath":         func(n *NarInfo) { n.StorePath = "/nix/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-b" },
		"store dir":         func(n *NarInfo) { n.StorePath = "/gnu/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a" },
		"NarHash":           func(n *NarInfo) { n.NarHash = "sha256:0gfqn9ffzch123l95qr52w84km7q2qs00vjsqhr2qac5vnyzb8iy" },
		"NarSize":           func(n *NarInfo) { n.NarSize++ },
		"reference added":   func(n *NarInfo) { n.References = append(n.References, "cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a") },
		"reference dropped": func(n *NarInfo) { n.References = n.References[1:] },
		"signature bit flipped": func(n *NarInfo) {
			s := []byte(n.Sigs[1])
			s[len(s)-4] ^= 1
			n.Sigs[1] = string(s)
		},
		"signature truncated":  func(n *NarInfo) { n.Sigs[1] = n.Sigs[1][:len(n.Sigs[1])-4] },
		"signature not base64": func(n *NarInfo) { n.Sigs[1] = "cache-1:!!!!" },
		"invalid NarHash":      func(n *NarInfo) { n.NarHash = "x" },
	} {
		t.Run(name, func(t *testing.T) {
			n := *signed
			n.References = append([]string(nil), signed.References...)
			n.Sigs = append([]string(nil), signed.Sigs...)
			tamper(&n)
			if k.Public().Verify(&n) {
				t.Error("tampered narinfo verifies")
			}
		})
	}
	// Fields outside the fingerprint may change.
	n := *signed
	n.URL, n.Compression, n.FileSize, n.Deriver = "elsewhere", "none", 1, ""
	if !k.Public().Verify(&n) {
		t.Error("changing fields outside the fingerprint breaks the signature")
	}
}

func TestAddSignatureReplaces(t *testing.T) {
	n := valid()
	n.Sigs = []string{"a:x", "cache-1:old", "b:y", "cache-1:older", "cache-10:z"}
	k := testKey("cache-1", 1)
	if err := n.AddSignature(k); err != nil {
		t.Fatal(err)
	}
	sig, err := k.Sign(n)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a:x", sig, "b:y", "cache-10:z"}
	if fmt.Sprint(n.Sigs) != fmt.Sprint(want) {
		t.Errorf("Sigs = %q, want %q", n.Sigs, want)
	}
}

func TestSignErrors(t *testing.T) {
	n := valid()
	for name, k := range map[string]SecretKey{
		"empty name":      {Key: testKey("x", 1).Key},
		"name with space": {Name: "a b", Key: testKey("x", 1).Key},
		"name with colon": {Name: "a:b", Key: testKey("x", 1).Key},
		"short key":       {Name: "a", Key: testKey("x", 1).Key[:32]},
		"no key":          {Name: "a"},
	} {
		if sig, err := k.Sign(n); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("%s: Sign = %q, %v; want ErrInvalidKey", name, sig, err)
		}
		if err := n.AddSignature(k); err == nil || n.Sigs != nil {
			t.Errorf("%s: AddSignature = %v, Sigs = %q; want error and no change", name, err, n.Sigs)
		}
	}
	bad := valid()
	bad.NarSize = 0
	if sig, err := testKey("a", 1).Sign(bad); !errors.Is(err, ErrMissingField) {
		t.Errorf("Sign of invalid narinfo = %q, %v; want ErrMissingField", sig, err)
	}
	// Malformed public keys never verify, and do not panic.
	n.Sigs = []string{"a:" + base64.StdEncoding.EncodeToString(make([]byte, 64))}
	for _, pk := range []PublicKey{{Name: "a"}, {Name: "a", Key: make([]byte, 31)}} {
		if pk.Verify(n) {
			t.Errorf("Verify with %v = true", pk)
		}
	}
}

func TestParseKeys(t *testing.T) {
	k := testKey("cache.example.org-1", 7)
	secret := k.Name + ":" + base64.StdEncoding.EncodeToString(k.Key)
	public := k.Name + ":" + base64.StdEncoding.EncodeToString(k.Key.Public().(ed25519.PublicKey))

	for _, s := range []string{secret, secret + "\n", " \t" + secret + "\r\n"} {
		got, err := ParseSecretKey(s)
		if err != nil || got.Name != k.Name || !bytes.Equal(got.Key, k.Key) {
			t.Errorf("ParseSecretKey(%q) = %v, %v", s, got, err)
		}
	}
	pk, err := ParsePublicKey(public + "\n")
	if err != nil || pk.Name != k.Name || !pk.Key.Equal(k.Public().Key) {
		t.Fatalf("ParsePublicKey = %v, %v", pk, err)
	}
	if pk.String() != public || k.Public().String() != public {
		t.Errorf("String = %q, %q; want %q", pk.String(), k.Public().String(), public)
	}

	// The public half of a secret key must match its seed.
	mismatched := append(bytes.Clone(k.Key[:32]), testKey("x", 8).Key[32:]...)
	b64 := base64.StdEncoding.EncodeToString(k.Key)
	for name, s := range map[string]string{
		"empty":            "",
		"no name":          b64,
		"empty name":       ":" + b64,
		"space in name":    "a b:" + b64,
		"bad base64":       "n:" + b64[:len(b64)-3] + "!==",
		"public as secret": public,
		"truncated":        "n:" + base64.StdEncoding.EncodeToString(k.Key[:63]),
		"mismatched half":  "n:" + base64.StdEncoding.EncodeToString(mismatched),
	} {
		_, err := ParseSecretKey(s)
		if !errors.Is(err, ErrInvalidKey) {
			t.Errorf("%s: ParseSecretKey err = %v, want ErrInvalidKey", name, err)
			continue
		}
		assertNoKeyMaterial(t, err.Error(), k)
	}
	for name, s := range map[string]string{
		"no name":          strings.TrimPrefix(public, k.Name+":"),
		"secret as public": secret,
		"bad base64":       k.Name + ":%%%%",
	} {
		if _, err := ParsePublicKey(s); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("%s: ParsePublicKey err = %v, want ErrInvalidKey", name, err)
		}
	}
}

// assertNoKeyMaterial fails if s contains any recognisable part of k.
func assertNoKeyMaterial(t *testing.T, s string, k SecretKey) {
	t.Helper()
	b64 := base64.StdEncoding.EncodeToString(k.Key)
	for i := 0; i+8 <= len(b64); i += 4 {
		if strings.Contains(s, b64[i:i+8]) {
			t.Errorf("%q contains key material", s)
			return
		}
	}
	if strings.Contains(s, fmt.Sprint([]byte(k.Key[:4]))[1:8]) {
		t.Errorf("%q contains key bytes", s)
	}
}

func TestLoadSecretKey(t *testing.T) {
	k := testKey("test-1", 9)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.sec")
	if err := os.WriteFile(good, []byte(k.Name+":"+base64.StdEncoding.EncodeToString(k.Key)), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadSecretKey(good)
	if err != nil || got.Name != k.Name || !bytes.Equal(got.Key, k.Key) {
		t.Fatalf("LoadSecretKey = %v, %v", got, err)
	}

	bad := filepath.Join(dir, "bad.sec")
	if err := os.WriteFile(bad, []byte(base64.StdEncoding.EncodeToString(k.Key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadSecretKey(bad)
	if !errors.Is(err, ErrInvalidKey) || !strings.Contains(err.Error(), bad) {
		t.Errorf("LoadSecretKey(bad) err = %v, want ErrInvalidKey naming %s", err, bad)
	}
	assertNoKeyMaterial(t, err.Error(), k)

	big := filepath.Join(dir, "big.sec")
	if err := os.WriteFile(big, bytes.Repeat([]byte("a"), maxKeyFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSecretKey(big); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("LoadSecretKey(big) err = %v, want ErrInvalidKey", err)
	}

	missingFile := filepath.Join(dir, "missing.sec")
	if _, err := LoadSecretKey(missingFile); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missingFile) {
		t.Errorf("LoadSecretKey(missing) err = %v, want ErrNotExist naming the file", err)
	}
}

func TestSecretKeyRedacted(t *testing.T) {
	k := testKey("test-1", 5)
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%d", "%q"} {
		for _, v := range []any{k, &k, []SecretKey{k}, struct{ K SecretKey }{k}} {
			s := fmt.Sprintf(verb, v)
			if !strings.Contains(s, "test-1") {
				t.Errorf("Sprintf(%s) = %q does not name the key", verb, s)
			}
			assertNoKeyMaterial(t, s, k)
			if strings.Contains(s, fmt.Sprintf("%x", []byte(k.Key[:4]))) || strings.Contains(s, fmt.Sprintf("%X", []byte(k.Key[:4]))) {
				t.Errorf("Sprintf(%s) = %q contains key bytes", verb, s)
			}
		}
	}
}
