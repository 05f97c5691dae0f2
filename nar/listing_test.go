package nar

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/internal/testenv"
)

// TestListingAsNixWritesIt: the listing of a real store path (every node
// type, executable and empty files, an empty directory, names with
// quotes, backslashes, control characters and UTF-8) is byte for byte
// the file `nix copy --to 'file://…?write-nar-listing=true'` writes.
func TestListingAsNixWritesIt(t *testing.T) {
	out := testenv.BuildDerivation(t, "listing-nodes", `set -e
mkdir -p $out/bin $out/share/empty-dir $out/a/b/c
printf '#!/bin/sh\n' > $out/bin/run; chmod 0555 $out/bin/run
: > $out/share/empty
printf 'x' > "$out/share/q\"uote"
printf 'y' > "$out/share/back\\slash"
printf 'z' > "$out/share/tab	in"
printf 'u' > "$out/share/ünï"
ln -s ../share/empty $out/a/b/c/link
printf 'deep' > $out/a/b/c/file
`)
	cache := t.TempDir()
	testenv.Run(t, "nix", "copy", "--to", "file://"+cache+"?write-nar-listing=true&compression=none", out)
	want, err := os.ReadFile(filepath.Join(cache, filepath.Base(out)[:32]+".ls"))
	if err != nil {
		t.Fatal(err)
	}
	dump := nixDump(t, out)
	var got bytes.Buffer
	n, err := WriteListing(&got, bytes.NewReader(dump))
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(dump)) {
		t.Errorf("NAR size %d, want %d", n, len(dump))
	}
	if got.String() != string(want) {
		t.Errorf("listing\n%s\nNix wrote\n%s", got.String(), want)
	}
	if err := ValidateListing(want); err != nil {
		t.Errorf("Nix's own listing does not validate: %v", err)
	}
}

func TestValidateListing(t *testing.T) {
	ok := `{"version":1,"root":{"type":"directory","entries":{"a":{"type":"regular","size":3,"narOffset":120},"l":{"type":"symlink","target":"a"}}}}`
	if err := ValidateListing([]byte(ok)); err != nil {
		t.Fatalf("valid listing: %v", err)
	}
	sorted := `{"root":{"entries":{"x":{"executable":true,"narOffset":1,"size":0,"type":"regular"}},"type":"directory"},"version":1}`
	if err := ValidateListing([]byte(sorted)); err != nil {
		t.Errorf("listing with sorted keys (newer Nix): %v", err)
	}
	for _, tc := range []struct{ name, body string }{
		{"not JSON", `{"version":1,`},
		{"no root", `{"version":1}`},
		{"version 2", strings.Replace(ok, `"version":1`, `"version":2`, 1)},
		{"traversal name", strings.Replace(ok, `"a":`, `"..":`, 1)},
		{"slash in name", strings.Replace(ok, `"a":`, `"x/y":`, 1)},
		{"empty name", strings.Replace(ok, `"a":`, `"":`, 1)},
		{"duplicate name", strings.Replace(ok, `"l":`, `"a":`, 1)},
		{"negative size", strings.Replace(ok, `"size":3`, `"size":-3`, 1)},
		{"regular without size", strings.Replace(ok, `"size":3,`, ``, 1)},
		{"unknown type", strings.Replace(ok, `"symlink"`, `"fifo"`, 1)},
		{"trailing data", ok + `{}`},
		{"too deep", `{"version":1,"root":` + strings.Repeat(`{"type":"directory","entries":{"d":`, 300) + `{"type":"directory"}` + strings.Repeat(`}}`, 300) + `}`},
	} {
		if err := ValidateListing([]byte(tc.body)); !errors.Is(err, ErrInvalidListing) {
			t.Errorf("%s: %v, want ErrInvalidListing", tc.name, err)
		}
	}
}
