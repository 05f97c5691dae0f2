package backend_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/backend"
)

const testDigest = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

func TestParseRef(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	tests := []struct {
		in   string
		want backend.Ref
	}{
		{"oci:/srv/nix-oci", backend.Ref{Layout: "/srv/nix-oci"}},
		{"oci:/srv/nix-oci/", backend.Ref{Layout: "/srv/nix-oci"}},
		{"oci:rel/dir", backend.Ref{Layout: "rel/dir"}},
		{"oci:./store", backend.Ref{Layout: "store"}},
		{"oci:/srv/nix-oci:hello-2.12", backend.Ref{Layout: "/srv/nix-oci", Reference: "hello-2.12"}},
		{"oci:/srv/nix-oci:_x.Y-1", backend.Ref{Layout: "/srv/nix-oci", Reference: "_x.Y-1"}},
		{"oci:/srv/nix-oci@" + testDigest, backend.Ref{Layout: "/srv/nix-oci", Reference: testDigest}},
		{"oci:~/x", backend.Ref{Layout: filepath.Join(home, "x")}},
		{"oci:~/x:tag", backend.Ref{Layout: filepath.Join(home, "x"), Reference: "tag"}},
		// The documented limitation: the text after the last ':' is a tag.
		{"oci:/a:b:c", backend.Ref{Layout: "/a:b", Reference: "c"}},
		{"localhost:5000/cache", backend.Ref{Registry: "localhost:5000", Repository: "cache"}},
		{"127.0.0.1:5000/me/nix:dev", backend.Ref{Registry: "127.0.0.1:5000", Repository: "me/nix", Reference: "dev"}},
		{"ghcr.io/me/nix:v1.2_3", backend.Ref{Registry: "ghcr.io", Repository: "me/nix", Reference: "v1.2_3"}},
		{"ghcr.io/me/nix@" + testDigest, backend.Ref{Registry: "ghcr.io", Repository: "me/nix", Reference: testDigest}},
		{"[::1]:5000/repo:t", backend.Ref{Registry: "[::1]:5000", Repository: "repo", Reference: "t"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := backend.ParseRef(tt.in)
			if err != nil {
				t.Fatalf("ParseRef(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseRef(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if got.IsLayout() != (tt.want.Layout != "") {
				t.Errorf("IsLayout() = %v, want %v", got.IsLayout(), tt.want.Layout != "")
			}
			// String formats what ParseRef reads back.
			again, err := backend.ParseRef(got.String())
			if err != nil {
				t.Fatalf("ParseRef(%q) (String of %q): %v", got.String(), tt.in, err)
			}
			if again != got {
				t.Errorf("ParseRef(String()) = %+v, want %+v", again, got)
			}
		})
	}
}

func TestParseRefInvalid(t *testing.T) {
	tests := []struct {
		in       string
		contains []string // substrings the error must have
	}{
		{"oci:", []string{"empty directory"}},
		{"oci::tag", []string{"empty directory"}},
		{"oci:@" + testDigest, []string{"empty directory"}},
		{"oci:/srv/x:", []string{`"" is not a valid tag`}},
		{"oci:/srv/x:-bad", []string{`"-bad" is not a valid tag`}},
		{"oci:/srv/x:.bad", []string{"not a valid tag"}},
		{"oci:/srv/x:" + strings.Repeat("a", 129), []string{"not a valid tag"}},
		{"oci:/srv/x@sha256:abc", []string{"digest"}},
		{"oci:/srv/x@md5:abc", []string{"digest"}},
		{"", []string{"invalid target"}},
		{"example.com/Repo", []string{"invalid target", "example.com/Repo"}},
		{"example.com/repo:-bad", []string{"invalid target"}},
		{"localhost:5000", []string{"invalid target", "TAG (also :TAG) for a closure in the default store"}},
		{":", []string{`"" is not a valid tag`}},
		{":-bad", []string{`"-bad" is not a valid tag`}},
		{"-bad", []string{"not a valid tag, and not a target", "oci:DIR[:TAG], HOST[:PORT]/REPO[:TAG]"}},
		{"@sha256:abc", []string{"digest"}},
		{"hello@" + testDigest, []string{"invalid target"}},
		{"/srv/nix-oci", []string{"for a directory, write oci:/srv/nix-oci"}},
		{"/srv/nix-oci:tag", []string{"write oci:/srv/nix-oci:tag"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := backend.ParseRef(tt.in)
			if err == nil {
				t.Fatalf("ParseRef(%q) = %+v, want an error", tt.in, got)
			}
			for _, s := range tt.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("ParseRef(%q) error %q does not contain %q", tt.in, err, s)
				}
			}
		})
	}
}

// TestParseRefDefaultStore: a tag alone (TAG or :TAG) or a digest alone
// (@DIGEST) names it in the default store; a bare name is a tag, never
// a registry host (a registry target has a '/').
func TestParseRefDefaultStore(t *testing.T) {
	store := t.TempDir()
	t.Setenv("NIXOCI_STORE", store)
	for in, want := range map[string]string{
		"hello":           "hello",
		":hello":          "hello",
		"hello-2.12":      "hello-2.12",
		":hello-2.12":     "hello-2.12",
		"example.com":     "example.com",
		"@" + testDigest:  testDigest,
		"_x.Y-1":          "_x.Y-1",
		":" + "WMAX4JPCB": "WMAX4JPCB",
	} {
		got, err := backend.ParseRef(in)
		if err != nil {
			t.Errorf("ParseRef(%q): %v", in, err)
			continue
		}
		if w := (backend.Ref{Layout: store, Reference: want}); got != w {
			t.Errorf("ParseRef(%q) = %+v, want %+v", in, got, w)
		}
		if again, err := backend.ParseRef(got.String()); err != nil || again != got {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", got.String(), again, err, got)
		}
	}
}

// TestParseRefRelativeDirHint: a bare relative directory gets the same
// "write oci:" hint as an absolute one. ParseRef has code for this hint,
// but registry.ParseReference accepts "." and ".." as registry names, so
// "./store" parses as registry "." and repository "store" and push would
// try to reach a registry called ".".
func TestParseRefRelativeDirHint(t *testing.T) {
	for _, in := range []string{"./store", "../store"} {
		got, err := backend.ParseRef(in)
		if err == nil {
			t.Errorf("ParseRef(%q) = %+v, want an error with a hint", in, got)
			continue
		}
		if want := "write oci:" + in; !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRef(%q) error %q does not contain %q", in, err, want)
		}
	}
}

func TestRefString(t *testing.T) {
	tests := []struct {
		ref            backend.Ref
		want, wantBase string
	}{
		{backend.Ref{Layout: "/srv/x"}, "oci:/srv/x", "oci:/srv/x"},
		{backend.Ref{Layout: "/srv/x", Reference: "t"}, "oci:/srv/x:t", "oci:/srv/x"},
		{backend.Ref{Layout: "/srv/x", Reference: testDigest}, "oci:/srv/x@" + testDigest, "oci:/srv/x"},
		{backend.Ref{Registry: "r.io:443", Repository: "a/b"}, "r.io:443/a/b", "r.io:443/a/b"},
		{backend.Ref{Registry: "r.io", Repository: "a", Reference: "t"}, "r.io/a:t", "r.io/a"},
		{backend.Ref{Registry: "r.io", Repository: "a", Reference: testDigest}, "r.io/a@" + testDigest, "r.io/a"},
	}
	for _, tt := range tests {
		if got := tt.ref.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.ref, got, tt.want)
		}
		if got := tt.ref.Base().String(); got != tt.wantBase {
			t.Errorf("%+v.Base().String() = %q, want %q", tt.ref, got, tt.wantBase)
		}
		if got, want := tt.ref.WithReference("other").String(), tt.wantBase+":other"; got != want {
			t.Errorf("%+v.WithReference(other).String() = %q, want %q", tt.ref, got, want)
		}
	}
}

func TestRefValidateTag(t *testing.T) {
	tests := []struct {
		ref     string
		wantErr string // "" for no error
	}{
		{"oci:/x:good", ""},
		{"r.io/a:v1", ""},
		{"oci:/x", "no tag given"},
		{"r.io/a", "no tag given"},
		{"oci:/x@" + testDigest, "not a valid tag"},
		{"r.io/a@" + testDigest, "not a valid tag"},
	}
	for _, tt := range tests {
		r, err := backend.ParseRef(tt.ref)
		if err != nil {
			t.Fatal(err)
		}
		err = r.ValidateTag()
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: ValidateTag() = %v, want nil", tt.ref, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: ValidateTag() = %v, want an error containing %q", tt.ref, err, tt.wantErr)
		}
	}
}

func TestDefaultStore(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	store := filepath.Join(t.TempDir(), "store")

	t.Setenv("NIXOCI_STORE", store+"/")
	got, err := backend.DefaultStore()
	if err != nil {
		t.Fatal(err)
	}
	if want := (backend.Ref{Layout: store}); got != want {
		t.Errorf("with NIXOCI_STORE: DefaultStore() = %+v, want %+v", got, want)
	}

	t.Setenv("NIXOCI_STORE", "")
	got, err = backend.DefaultStore()
	if err != nil {
		t.Fatal(err)
	}
	if want := (backend.Ref{Layout: filepath.Join(home, ".local", "share", "nixoci", "store")}); got != want {
		t.Errorf("without NIXOCI_STORE: DefaultStore() = %+v, want %+v", got, want)
	}
	if !got.IsLayout() {
		t.Errorf("DefaultStore() is not a layout")
	}
}

func TestIsLoopback(t *testing.T) {
	tests := []struct {
		hostport string
		want     bool
	}{
		{"127.0.0.1:5000", true},
		{"127.0.0.1", true},
		{"127.1.2.3:80", true},
		{"[::1]:5000", true},
		{"::1", true},
		{"localhost", true},
		{"localhost:5000", true},
		{"10.0.0.1", false},
		{"10.0.0.1:5000", false},
		{"example.com:443", false},
		{"example.com", false},
		{"localhost.example.com", false},
		{"[::2]:5000", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := backend.IsLoopback(tt.hostport); got != tt.want {
			t.Errorf("IsLoopback(%q) = %v, want %v", tt.hostport, got, tt.want)
		}
	}
}

func TestOpenLayoutRef(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	ref, err := backend.ParseRef("oci:" + dir + ":tag")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := backend.Open(t.Context(), ref, backend.Options{}); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("Open(missing layout) error = %v, want errdef.ErrNotFound", err)
	}
	tgt, err := backend.Open(t.Context(), ref, backend.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	l, ok := tgt.(*backend.Layout)
	if !ok {
		t.Fatalf("Open(layout) returned %T, want *backend.Layout", tgt)
	}
	if l.Dir() != dir {
		t.Errorf("Dir() = %q, want %q", l.Dir(), dir)
	}
}

func TestOpenRemoteNames(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	ref, err := backend.ParseRef("registry.example:5000/me/nix:tag")
	if err != nil {
		t.Fatal(err)
	}
	tgt, err := backend.Open(t.Context(), ref, backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(tgt)
	if want := "registry.example:5000/me/nix"; got != want {
		t.Errorf("remote target String() = %q, want %q", got, want)
	}
}

func ExampleParseRef() {
	for _, s := range []string{
		"oci:/srv/nix-oci:hello-2.12",
		"localhost:5000/me/nix:dev",
		"ghcr.io/me/nix@sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
	} {
		r, err := backend.ParseRef(s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		if r.IsLayout() {
			fmt.Printf("layout %s, reference %s\n", r.Layout, r.Reference)
		} else {
			fmt.Printf("registry %s, repository %s, reference %s\n", r.Registry, r.Repository, r.Reference)
		}
	}
	_, err := backend.ParseRef("/srv/nix-oci")
	fmt.Println(err != nil && strings.Contains(err.Error(), "write oci:/srv/nix-oci"))
	// Output:
	// layout /srv/nix-oci, reference hello-2.12
	// registry localhost:5000, repository me/nix, reference dev
	// registry ghcr.io, repository me/nix, reference sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a
	// true
}
