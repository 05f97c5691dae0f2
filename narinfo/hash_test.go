package narinfo

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func TestNormaliseHash(t *testing.T) {
	tests := []struct {
		in, want string
		errMsg   string // non-empty if an error is expected
	}{
		{in: exampleNarHash, want: exampleNarHash},
		{in: "sha256:" + exampleNarHashHex, want: exampleNarHash},
		{in: "sha256:" + strings.ToUpper(exampleNarHashHex), want: exampleNarHash},
		{in: "sha256:" + exampleNarHashB64, want: exampleNarHash},
		{in: "sha256-" + exampleNarHashB64, want: exampleNarHash},
		{in: "", errMsg: `missing "sha256:" prefix`},
		{in: exampleNarHashHex, errMsg: `missing "sha256:" prefix`},
		{in: "sha1:0000000000000000000000000000000000000000", errMsg: `unsupported algorithm "sha1"`},
		{in: "sha512-" + strings.Repeat("A", 86) + "==", errMsg: `unsupported algorithm "sha512"`},
		{in: "SHA256:" + exampleNarHashHex, errMsg: `unsupported algorithm "SHA256"`},
		{in: "sha256:", errMsg: "invalid hash"},
		{in: "sha256:" + exampleNarHashHex[1:], errMsg: "invalid hash"},
		{in: "sha256:" + strings.Replace(exampleNarHashHex, "3", "g", 1), errMsg: "invalid hash"},
		{in: "sha256-" + exampleNarHashHex, errMsg: "invalid hash"},       // SRI must be base64
		{in: "sha256:" + strings.Repeat("z", 52), errMsg: "invalid hash"}, // non-zero padding bits
		{in: "sha256:" + strings.Repeat("!", 44), errMsg: "invalid hash"},
	}
	for _, tt := range tests {
		got, err := NormaliseHash(tt.in)
		if tt.errMsg == "" {
			if err != nil || got != tt.want {
				t.Errorf("NormaliseHash(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("NormaliseHash(%q) = %q, want error", tt.in, got)
			continue
		}
		if !errors.Is(err, ErrInvalidValue) || !strings.HasPrefix(err.Error(), "narinfo: ") ||
			!strings.Contains(err.Error(), tt.errMsg) {
			t.Errorf("NormaliseHash(%q) error %q, want ErrInvalidValue containing %q", tt.in, err, tt.errMsg)
		}
	}
}

func TestHashDigestHex(t *testing.T) {
	for _, in := range []string{
		exampleNarHash,
		"sha256:" + exampleNarHashHex,
		"sha256:" + strings.ToUpper(exampleNarHashHex),
		"sha256-" + exampleNarHashB64,
	} {
		if got, err := HashDigestHex(in); err != nil || got != exampleNarHashHex {
			t.Errorf("HashDigestHex(%q) = %q, %v; want %q", in, got, err, exampleNarHashHex)
		}
	}
	if _, err := HashDigestHex("md5:00000000000000000000000000000000"); !errors.Is(err, ErrInvalidValue) {
		t.Errorf("HashDigestHex(md5) err = %v, want ErrInvalidValue", err)
	}
}

func TestHashFromHex(t *testing.T) {
	if got, err := HashFromHex(exampleNarHashHex); err != nil || got != exampleNarHash {
		t.Errorf("HashFromHex = %q, %v; want %q", got, err, exampleNarHash)
	}
	for _, in := range []string{
		"",
		exampleNarHashHex[2:],
		"sha256:" + exampleNarHashHex,
		strings.Replace(exampleNarHashHex, "3", "x", 1),
	} {
		if got, err := HashFromHex(in); !errors.Is(err, ErrInvalidValue) {
			t.Errorf("HashFromHex(%q) = %q, %v; want ErrInvalidValue", in, got, err)
		}
	}
}

func TestHashFromDigest(t *testing.T) {
	d, err := hex.DecodeString(exampleNarHashHex)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := HashFromDigest(d); err != nil || got != exampleNarHash {
		t.Errorf("HashFromDigest = %q, %v; want %q", got, err, exampleNarHash)
	}
	if _, err := HashFromDigest(d[:31]); !errors.Is(err, ErrInvalidValue) {
		t.Errorf("HashFromDigest of 31 bytes: %v, want ErrInvalidValue", err)
	}
}
