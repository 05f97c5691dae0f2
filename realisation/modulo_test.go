package realisation

import (
	"errors"
	"os"
	"path"
	"testing"
)

// TestHashModulo: the hash modulo of real derivations equals the one
// Nix 2.8 recorded in their realisations (`nix realisation info --json`
// after building them with ca-derivations enabled): a resolved
// content-addressed derivation (no input derivations), the unresolved
// one (its input a content-addressed derivation), that input, a
// fixed-output derivation and an input-addressed one depending on it.
func TestHashModulo(t *testing.T) {
	read := func(p string) ([]byte, error) { return os.ReadFile(path.Join("testdata/drv", path.Base(p))) }
	for _, tc := range []struct{ drv, want string }{
		{"7bv3947xzzbly0q6hmd3rqy2lg9jgk5x-proto-ca-app-x1.drv", "sha256:37136ee28375983d399589db9701c9cb4ba5c9eb3b694ee354ceea8b22c06a59"},
		{"rl0iqsd93ypzgaf87bx8xlp19k7495sk-proto-ca-app-x1.drv", "sha256:8cefb124f81c539dd1c9ff988bad58eb590297b90f46de967ee6035d7d35e941"},
		{"6db0vryiw945g9yf8favchiwdm6bnp6s-proto-ca-dep-x1.drv", "sha256:f0cdb0037d1dccd286417dd963f5282b7edb03e253487ed83aa303856b9637c5"},
		{"5d8x7avgwc7a9mxjbk9mdfvv63hjf2l3-proto-fod-xq2.drv", "sha256:75027f723884dad48ee002beae73a6c8732b973ae537e63a026cbf26aa961245"},
		{"7jrvs3apjp212k0147vlinnwq17hi24h-proto-ia-on-fod-xq2.drv", "sha256:d5be9d7d7ef9bede151b9ccace62c1c5e1d9fe845ba8e1f0c2b98b4647095e57"},
	} {
		got, err := HashModulo("/nix/store/"+tc.drv, read)
		if err != nil || got != tc.want {
			t.Errorf("%s: %s, %v; want %s", tc.drv, got, err, tc.want)
		}
	}
	// An input derivation that is not there: no hash, and an error saying so.
	missing := func(p string) ([]byte, error) {
		if path.Base(p) == "6db0vryiw945g9yf8favchiwdm6bnp6s-proto-ca-dep-x1.drv" {
			return nil, os.ErrNotExist
		}
		return read(p)
	}
	if _, err := HashModulo("/nix/store/rl0iqsd93ypzgaf87bx8xlp19k7495sk-proto-ca-app-x1.drv", missing); !errors.Is(err, ErrNoHashModulo) {
		t.Errorf("missing input: %v, want ErrNoHashModulo", err)
	}
}
