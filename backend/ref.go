package backend

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry"

	"github.com/nixoci/nixoci/spec"
)

// LayoutPrefix introduces an image-layout directory in a target string.
const LayoutPrefix = "oci:"

// Ref is a parsed target string, with an optional tag or digest.
type Ref struct {
	// Layout is the directory of an image layout; empty for registries.
	Layout string
	// Registry ("HOST[:PORT]") and Repository name a registry repository.
	Registry   string
	Repository string
	// Reference is a tag or a digest ("sha256:…"), or empty.
	Reference string
}

// TargetForms and RefForms list the forms ParseRef accepts, for errors
// and help: the targets, and those with a tag alone for the default store.
const (
	TargetForms = "oci:DIR[:TAG] or HOST[:PORT]/REPO[:TAG]"
	RefForms    = "oci:DIR[:TAG], HOST[:PORT]/REPO[:TAG], or TAG (also :TAG) for a closure in the default store"
)

// ParseRef parses a target string:
//
//	oci:DIR, oci:DIR:TAG, oci:DIR@DIGEST              an image layout
//	HOST[:PORT]/REPO, HOST[:PORT]/REPO:TAG, …@DIGEST  a registry repository
//	TAG, :TAG, @DIGEST                                in the default store
//
// A string with neither '/' nor ':' is a tag of the default store
// (DefaultStore): a registry target always has a '/' before its
// repository, so "hello" and "hello-2.12" are tags, never hosts. In a
// layout target the text after the last ':' is a tag when it is a valid
// tag; a directory whose name contains ':' cannot be named.
func ParseRef(s string) (Ref, error) {
	if dir, ok := strings.CutPrefix(s, LayoutPrefix); ok {
		return parseLayoutRef(s, dir)
	}
	if strings.HasPrefix(s, "/") || strings.HasPrefix(s, ".") || strings.HasPrefix(s, "~") {
		return Ref{}, fmt.Errorf("invalid target %q: for a directory, write oci:%s", s, s)
	}
	if ref, ok, err := parseDefaultStoreRef(s); ok || err != nil {
		return ref, err
	}
	r, err := registry.ParseReference(s)
	if err != nil {
		return Ref{}, fmt.Errorf("invalid target %q: want %s: %w", s, RefForms, err)
	}
	return Ref{Registry: r.Registry, Repository: r.Repository, Reference: r.Reference}, nil
}

// parseDefaultStoreRef parses the forms naming a tag or digest of the
// default store: TAG (no '/' and no ':'), :TAG and @DIGEST. ok is false
// for any other form.
func parseDefaultStoreRef(s string) (ref Ref, ok bool, err error) {
	var reference string
	switch {
	case strings.HasPrefix(s, ":"):
		reference = s[1:]
		if !spec.ValidTag(reference) {
			return Ref{}, true, fmt.Errorf("invalid target %q: %q is not a valid tag (want %s)", s, reference, RefForms)
		}
	case strings.HasPrefix(s, "@"):
		d, err := digest.Parse(s[1:])
		if err != nil {
			return Ref{}, true, fmt.Errorf("invalid target %q: digest %q: %w", s, s[1:], err)
		}
		reference = d.String()
	case s != "" && !strings.ContainsAny(s, "/:@"):
		if !spec.ValidTag(s) {
			return Ref{}, true, fmt.Errorf("invalid target %q: not a valid tag, and not a target (want %s)", s, RefForms)
		}
		reference = s
	default:
		return Ref{}, false, nil
	}
	store, err := DefaultStore()
	if err != nil {
		return Ref{}, true, err
	}
	return store.WithReference(reference), true, nil
}

func parseLayoutRef(s, dir string) (Ref, error) {
	var ref string
	if i := strings.LastIndexByte(dir, '@'); i >= 0 {
		d, err := digest.Parse(dir[i+1:])
		if err != nil {
			return Ref{}, fmt.Errorf("invalid target %q: digest %q: %w", s, dir[i+1:], err)
		}
		dir, ref = dir[:i], d.String()
	} else if i := strings.LastIndexByte(dir, ':'); i >= 0 {
		if !spec.ValidTag(dir[i+1:]) {
			return Ref{}, fmt.Errorf("invalid target %q: %q is not a valid tag", s, dir[i+1:])
		}
		dir, ref = dir[:i], dir[i+1:]
	}
	if dir == "" {
		return Ref{}, fmt.Errorf("invalid target %q: empty directory after %q", s, LayoutPrefix)
	}
	if strings.HasPrefix(dir, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			dir = filepath.Join(home, dir[2:])
		}
	}
	return Ref{Layout: filepath.Clean(dir), Reference: ref}, nil
}

// IsLayout reports whether r names an image-layout directory.
func (r Ref) IsLayout() bool { return r.Layout != "" }

// WithReference returns r naming tag or digest ref instead.
func (r Ref) WithReference(ref string) Ref {
	r.Reference = ref
	return r
}

// Base returns r without its tag or digest.
func (r Ref) Base() Ref { return r.WithReference("") }

// String formats r as ParseRef accepts it.
func (r Ref) String() string {
	var s string
	if r.IsLayout() {
		s = LayoutPrefix + r.Layout
	} else {
		s = r.Registry + "/" + r.Repository
	}
	switch {
	case r.Reference == "":
	case strings.Contains(r.Reference, ":"):
		s += "@" + r.Reference
	default:
		s += ":" + r.Reference
	}
	return s
}

// ValidateTag checks that r names a tag, not a digest or nothing.
func (r Ref) ValidateTag() error {
	if r.Reference == "" {
		return fmt.Errorf("%s: no tag given (append :TAG)", r)
	}
	if !spec.ValidTag(r.Reference) {
		return fmt.Errorf("%s: %q is not a valid tag", r, r.Reference)
	}
	return nil
}

// DefaultStore is the embedded default target: an image layout at
// $NIXOCI_STORE, or ~/.local/share/nixoci/store.
func DefaultStore() (Ref, error) {
	if dir := os.Getenv("NIXOCI_STORE"); dir != "" {
		return Ref{Layout: filepath.Clean(dir)}, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return Ref{}, fmt.Errorf("no default store: set NIXOCI_STORE or pass a target: %w", err)
	}
	return Ref{Layout: filepath.Join(home, ".local", "share", "nixoci", "store")}, nil
}
