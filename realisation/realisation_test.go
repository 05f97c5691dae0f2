package realisation

import (
	"crypto/ed25519"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/narinfo"
)

// TestV1RoundTrip: files written by Nix 2.8 (`nix copy --to file://` of
// a content-addressed derivation) parse and render back byte for byte.
func TestV1RoundTrip(t *testing.T) {
	for _, f := range []string{"testdata/nix-2.8.doi", "testdata/nix-2.8-with-dependent.doi"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		v, err := ParseV1(data, "/nix/store")
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if got := string(v.Marshal()); got != string(data) {
			t.Errorf("%s: rendered\n%s\nwant\n%s", f, got, data)
		}
		if got, want := v.Key.File(), "realisations/"+v.Key.String()+".doi"; got != want || !strings.HasPrefix(v.Key.String(), "sha256:") {
			t.Errorf("%s: file %s", f, got)
		}
	}
}

const (
	drv = "00000000000000000000000000000000-producer.drv"
	out = "11111111111111111111111111111111-produced"
)

// TestV2Fingerprint: the fingerprint is the entry's JSON without the
// value's signatures, keys in Nix's (sorted) order; signatures verify
// only for the key they were made for.
func TestV2Fingerprint(t *testing.T) {
	key, err := NewPathKey(drv, "out")
	if err != nil {
		t.Fatal(err)
	}
	v := &V2{OutPath: out}
	want := `{"key":{"drvPath":"` + drv + `","outputName":"out"},"value":{"outPath":"` + out + `"}}`
	if got := v.Fingerprint(key); got != want {
		t.Errorf("fingerprint %s\nwant %s", got, want)
	}
	pub, priv, _ := ed25519.GenerateKey(nil)
	if err := v.Sign(key, narinfo.SecretKey{Name: "k-1", Key: priv}); err != nil {
		t.Fatal(err)
	}
	keys := []narinfo.PublicKey{{Name: "k-1", Key: pub}}
	if !v.Verified(key, keys) {
		t.Error("own signature does not verify")
	}
	if v.Verified(PathKey{Drv: drv, Output: "dev"}, keys) {
		t.Error("signature verifies for another output")
	}
	back, err := ParseV2(v.Marshal(), "/nix/store")
	if err != nil || !back.Verified(key, keys) {
		t.Errorf("parsed back: %v, verified %v\n%s", err, back != nil && back.Verified(key, keys), v.Marshal())
	}
	if !strings.HasPrefix(string(v.Marshal()), `{"outPath":"`+out+`","signatures":[{"keyName":"k-1","sig":"`) {
		t.Errorf("marshal: %s", v.Marshal())
	}
}

// TestV1Signatures: a signature of the old layout covers id, outPath and
// dependentRealisations.
func TestV1Signatures(t *testing.T) {
	data, _ := os.ReadFile("testdata/nix-2.8-with-dependent.doi")
	v, err := ParseV1(data, "/nix/store")
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(nil)
	if err := v.Sign(narinfo.SecretKey{Name: "k-1", Key: priv}); err != nil {
		t.Fatal(err)
	}
	keys := []narinfo.PublicKey{{Name: "k-1", Key: pub}}
	back, err := ParseV1(v.Marshal(), "/nix/store")
	if err != nil || !back.Verified(keys) {
		t.Fatalf("signed file does not verify: %v", err)
	}
	back.Dependent = map[string]string{}
	if back.Verified(keys) {
		t.Error("signature still verifies without dependentRealisations")
	}
}

func TestBadInput(t *testing.T) {
	good := `{"dependentRealisations":{},"id":"sha256:d82acc1544d3d972c55f389adf50a4aaf4fb7a5c7ca42b838c5164bda146b99d!out","outPath":"` + out + `","signatures":[]}`
	for _, tc := range []struct{ name, body string }{
		{"malformed outPath", strings.Replace(good, out, "not-a-store-path", 1)},
		{"traversal in outPath", strings.Replace(good, out, "../../etc/passwd", 1)},
		{"short hash", strings.Replace(good, "sha256:d82a", "sha256:d8", 1)},
		{"bad output name", strings.Replace(good, "!out", "!o/t", 1)},
		{"bad signature", strings.Replace(good, `"signatures":[]`, `"signatures":["nokey"]`, 1)},
		{"not an object", `[1]`},
		{"trailing data", good + `{}`},
		{"too large", `{"x":"` + strings.Repeat("a", MaxSize) + `"}`},
	} {
		if _, err := ParseV1([]byte(tc.body), "/nix/store"); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tc.name, err)
		}
	}
	if _, err := ParseV1([]byte(good), "/nix/store"); err != nil {
		t.Errorf("good: %v", err)
	}
	if _, err := ParseV2([]byte(`{"outPath":"/etc/passwd","signatures":[]}`), "/nix/store"); !errors.Is(err, ErrInvalid) {
		t.Errorf("v2 absolute path outside the store: %v", err)
	}
	if v, err := ParseV2([]byte(`{"outPath":"/nix/store/`+out+`"}`), "/nix/store"); err != nil || v.OutPath != out {
		t.Errorf("v2 absolute path in the store: %v", err)
	}
	if _, err := NewPathKey("../x.drv", "out"); !errors.Is(err, ErrInvalid) {
		t.Errorf("traversal drv: %v", err)
	}
}
