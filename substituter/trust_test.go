package substituter_test

import (
	"strings"
	"testing"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
	"github.com/nixoci/nixoci/substituter"
)

// TestTrustPolicy: the server adds its signature only to paths whose
// stored signatures verify against a key it trusts (named, or its own),
// unless told to sign everything; other paths keep the signatures they
// have.
func TestTrustPolicy(t *testing.T) {
	own := testKey("serve-1", 7)
	named := testKey("team-ci", 11)
	stranger := testKey("someone", 12)

	signedBy := func(name string, k *narinfo.SecretKey, edit func(*narinfo.NarInfo)) *testPath {
		p := newTestPath(t, name, name, spec.CompressionZstd)
		p.Info.Sigs = nil
		if k != nil {
			if err := p.Info.AddSignature(*k); err != nil {
				t.Fatal(err)
			}
		}
		if edit != nil {
			edit(p.Info)
		}
		return p
	}
	forged := func(n *narinfo.NarInfo) {
		// A signature under the trusted key's name that does not verify.
		n.Sigs = []string{named.Name + ":" + strings.Repeat("A", 86) + "=="}
	}
	tampered := func(n *narinfo.NarInfo) {
		// Signed, then its NarSize changed: the signature no longer holds.
		n.NarSize++
	}
	for _, tc := range []struct {
		name       string
		path       *testPath
		signAll    bool
		wantSigned bool
	}{
		{"unsigned", signedBy("trust-unsigned", nil, nil), false, false},
		{"signed by a stranger", signedBy("trust-stranger", &stranger, nil), false, false},
		{"signed by a named key", signedBy("trust-named", &named, nil), false, true},
		{"signed by its own key", signedBy("trust-own", &own, nil), false, true},
		{"forged named signature", signedBy("trust-forged", nil, forged), false, false},
		{"tampered after signing", signedBy("trust-tampered", &named, tampered), false, false},
		{"unsigned, sign everything", signedBy("trust-all", nil, nil), true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLayout(t)
			tc.path.store(t, l)
			s, _ := newServer(t, substituter.Options{Backends: backends(l), SignKeys: []narinfo.SecretKey{own},
				TrustedKeys: []narinfo.PublicKey{named.Public()}, SignUnverified: tc.signAll})
			r := get(t, s, tc.path.NarInfoPath())
			if r.Code != 200 {
				t.Fatalf("GET narinfo: %d %s", r.Code, r.Body)
			}
			got, err := narinfo.Parse(strings.NewReader(r.Body))
			if err != nil {
				t.Fatal(err)
			}
			if signed := own.Public().Verify(got); signed != tc.wantSigned {
				t.Errorf("signed by the server: %v, want %v\n%s", signed, tc.wantSigned, r.Body)
			}
			// The stored signatures are served in any case.
			for _, sig := range tc.path.Info.Sigs {
				if !strings.Contains(r.Body, "Sig: "+sig+"\n") {
					t.Errorf("stored signature %s not served:\n%s", sig, r.Body)
				}
			}
			decision := "unverified"
			if tc.wantSigned {
				decision = "signed"
			}
			if v, _ := metricValue(t, s, `nixoci_narinfo_signing_total{decision="`+decision+`"}`); v != 1 {
				t.Errorf("nixoci_narinfo_signing_total{decision=%q} = %v, want 1", decision, v)
			}
		})
	}
}

// TestUploadsAreSigned: a path received through an authenticated upload
// is stored with the server's signature, so it is vouched for by every
// server holding that key, while an unsigned path pushed into the
// repository behind its back is not.
func TestUploadsAreSigned(t *testing.T) {
	own := testKey("serve-1", 7)
	l := newLayout(t)
	up := newTestPath(t, "signup-1", "uploaded", spec.CompressionZstd)
	up.Info.Sigs = nil
	pushed := newTestPath(t, "signup-2", "pushed", spec.CompressionZstd)
	pushed.Info.Sigs = nil
	pushed.store(t, l)

	s, _ := uploadServer(t, l, substituter.Options{SignKeys: []narinfo.SecretKey{own}})
	if r := put(t, s, up.NarURLPath(), up.File, goodAuth...); r.Code != 201 {
		t.Fatal(r.Code, r.Body)
	}
	if r := put(t, s, up.NarInfoPath(), []byte(narinfoText(t, up)), goodAuth...); r.Code != 201 {
		t.Fatal(r.Code, r.Body)
	}
	// Another server with the same key and no other trust.
	s2, _ := newServer(t, substituter.Options{Backends: backends(l), SignKeys: []narinfo.SecretKey{own}})
	for _, tc := range []struct {
		p    *testPath
		want bool
	}{{up, true}, {pushed, false}} {
		for _, srv := range []*substituter.Server{s, s2} {
			r := get(t, srv, tc.p.NarInfoPath())
			got, err := narinfo.Parse(strings.NewReader(r.Body))
			if err != nil {
				t.Fatalf("%s: %d %v", tc.p.Name, r.Code, err)
			}
			if signed := own.Public().Verify(got); signed != tc.want {
				t.Errorf("%s signed by the server: %v, want %v\n%s", tc.p.Name, signed, tc.want, r.Body)
			}
		}
	}
	// The signature is in the stored artifact.
	art, err := artifact.FetchPathByHash(t.Context(), l, up.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if !own.Public().Verify(art.Info) {
		t.Errorf("stored Sigs %v lack the server's", art.Info.Sigs)
	}
}
