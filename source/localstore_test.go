package source

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/codec"
	"github.com/nixoci/nixoci/nar"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

func mustHashFromHex(t *testing.T, h string) string {
	t.Helper()
	s, err := narinfo.HashFromHex(h)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseDumpDB(t *testing.T) {
	out, err := os.ReadFile(filepath.Join("testdata", "dump-db.txt"))
	if err != nil {
		t.Fatal(err)
	}
	infos := map[string]*narinfo.NarInfo{}
	if err := parseDumpDB(out, infos); err != nil {
		t.Fatal(err)
	}
	want := map[string]*narinfo.NarInfo{
		"/nix/store/wmax4jpcbcyvaqcx04skyir4x9j40ygh-fx-app": {
			StorePath: "/nix/store/wmax4jpcbcyvaqcx04skyir4x9j40ygh-fx-app",
			NarHash:   mustHashFromHex(t, "ffd68d05fed1bc922879cec5cfc24b7accb156db316ab71a9699e1e2a9437646"),
			NarSize:   680,
			References: []string{
				"d7znnwpmkk1py2q31pj6j11vwwp241aa-fx-busybox",
				"qc24b2vxd8b277nrd2dpxpikcbz6k14p-fx-data",
			},
			Deriver: "5h989f9kw629g4y1mnpg3q9s30pkh9k0-fx-app.drv",
		},
		"/nix/store/d7znnwpmkk1py2q31pj6j11vwwp241aa-fx-busybox": {
			StorePath:  "/nix/store/d7znnwpmkk1py2q31pj6j11vwwp241aa-fx-busybox",
			NarHash:    mustHashFromHex(t, "1d0495fcf8173bdbfb423e6e42def545db831dc010c62d1a1093d3130d81a454"),
			NarSize:    1982928,
			References: []string{},
			Deriver:    "a4l18b5wpp3qzac773sj8bvcb4lx1zr7-fx-busybox.drv",
		},
	}
	if !reflect.DeepEqual(infos, want) {
		for p, w := range want {
			t.Errorf("%s:\n got %+v\nwant %+v", p, infos[p], w)
		}
	}
	// What parseDumpDB returns is enough to sign: the fingerprint fields are valid.
	for p, info := range infos {
		if _, err := info.Fingerprint(); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if !strings.HasPrefix(infos["/nix/store/wmax4jpcbcyvaqcx04skyir4x9j40ygh-fx-app"].NarHash, "sha256:") {
		t.Error("NarHash not in sha256:<nix32> form")
	}
}

func TestParseDumpDBVariants(t *testing.T) {
	const hash = "ffd68d05fed1bc922879cec5cfc24b7accb156db316ab71a9699e1e2a9437646"
	tests := []struct {
		name  string
		input string
		check func(t *testing.T, infos map[string]*narinfo.NarInfo)
	}{
		{"empty output", "", func(t *testing.T, infos map[string]*narinfo.NarInfo) {
			if len(infos) != 0 {
				t.Errorf("got %d paths, want 0", len(infos))
			}
		}},
		{"no deriver", "/nix/store/wmax4jpcbcyvaqcx04skyir4x9j40ygh-src\n" + hash + "\n8\n\n0\n", func(t *testing.T, infos map[string]*narinfo.NarInfo) {
			info := infos["/nix/store/wmax4jpcbcyvaqcx04skyir4x9j40ygh-src"]
			if info == nil || info.Deriver != "" || info.NarSize != 8 {
				t.Errorf("got %+v, want a path without deriver", info)
			}
		}},
		{"unsorted references, self reference", "/nix/store/wmax4jpcbcyvaqcx04skyir4x9j40ygh-a\n" + hash + "\n8\n\n3\n" +
			"/nix/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-z\n/nix/store/wmax4jpcbcyvaqcx04skyir4x9j40ygh-a\n/nix/store/00000000000000000000000000000000-b\n",
			func(t *testing.T, infos map[string]*narinfo.NarInfo) {
				want := []string{"00000000000000000000000000000000-b", "wmax4jpcbcyvaqcx04skyir4x9j40ygh-a", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-z"}
				if got := infos["/nix/store/wmax4jpcbcyvaqcx04skyir4x9j40ygh-a"].References; !reflect.DeepEqual(got, want) {
					t.Errorf("References = %v, want %v", got, want)
				}
			}},
		{"no final newline", "/nix/store/wmax4jpcbcyvaqcx04skyir4x9j40ygh-src\n" + hash + "\n8\n\n0", func(t *testing.T, infos map[string]*narinfo.NarInfo) {
			if len(infos) != 1 {
				t.Errorf("got %d paths, want 1", len(infos))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			infos := map[string]*narinfo.NarInfo{}
			if err := parseDumpDB([]byte(tt.input), infos); err != nil {
				t.Fatal(err)
			}
			tt.check(t, infos)
		})
	}
}

func TestParseDumpDBMalformed(t *testing.T) {
	good, err := os.ReadFile(filepath.Join("testdata", "dump-db.txt"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(good), "\n")
	// replace returns the good output with line n (1-based) replaced.
	replace := func(n int, s string) string {
		l := append([]string(nil), lines...)
		l[n-1] = s + "\n"
		return strings.Join(l, "")
	}
	first := lines[:len(lines)-1] // drop the final "" after the last newline
	tests := []struct {
		name  string
		input string
		want  []string // substrings of the error
	}{
		{"truncated after path", strings.Join(first[:1], ""), []string{"line 1", "hash"}},
		{"truncated after hash", strings.Join(first[:2], ""), []string{"line 2", "size"}},
		{"truncated after size", strings.Join(first[:3], ""), []string{"line 3", "deriver"}},
		{"truncated before count", strings.Join(first[:4], ""), []string{"line 4", "reference count"}},
		{"truncated in references", strings.Join(first[:6], ""), []string{"line 6", "references"}},
		{"second record truncated", strings.Join(first[:10], ""), []string{"line 10", "d7znnwpmkk1py2q31pj6j11vwwp241aa-fx-busybox"}},
		{"bad size", replace(3, "68O"), []string{"line 3", "size", "wmax4jpcbcyvaqcx04skyir4x9j40ygh-fx-app"}},
		{"negative size", replace(3, "-680"), []string{"line 3", "size"}},
		{"bad size in second record", replace(10, "1.5"), []string{"line 10", "size", "fx-busybox"}},
		{"short hash", replace(2, "ffd68d05"), []string{"line 2", "hash"}},
		{"hash not hex", replace(2, strings.Repeat("g", 64)), []string{"line 2", "hash"}},
		{"nix32 hash", replace(9, "sha256:0ry5rlpw4si12hn39iij36v8xypjbp5438hnxka3wz93dls8wrxs"), []string{"line 9", "hash"}},
		{"bad count", replace(5, "two"), []string{"line 5", "reference count"}},
		{"negative count", replace(5, "-1"), []string{"line 5", "reference count"}},
		{"count too large", replace(12, "1"), []string{"line 12", "references"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := parseDumpDB([]byte(tt.input), map[string]*narinfo.NarInfo{})
			if err == nil {
				t.Fatalf("parseDumpDB succeeded on:\n%s", tt.input)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParsePathInfoJSON(t *testing.T) {
	const (
		app  = "/nix/store/wmax4jpcbcyvaqcx04skyir4x9j40ygh-fx-app"
		bb   = "/nix/store/d7znnwpmkk1py2q31pj6j11vwwp241aa-fx-busybox"
		data = "/nix/store/qc24b2vxd8b277nrd2dpxpikcbz6k14p-fx-data"
		ca   = "fixed:r:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
	)
	tests := []struct {
		name     string
		storeDir string
		json     string
		want     map[string]pathExtras
	}{
		{"Nix 2.8 list", "/nix/store",
			`[{"path":"` + app + `","narHash":"sha256-/9aNBf7RvJIoec5ct8wkt6fLFW2za2Gpxpnp4qlDdkY=","narSize":680,"references":["` + bb + `","` + data + `"],"deriver":"/nix/store/5h989f9kw629g4y1mnpg3q9s30pkh9k0-fx-app.drv","registrationTime":1700000000,"signatures":["k:sig"],"ca":null,"valid":true},` +
				`{"path":"` + bb + `","narHash":"sha256-HQSV/PgXO9v0I+ZuQt71RcPbHcAQxiGhoQk9MT2BpFQ=","narSize":1982928,"references":[],"valid":true}]`,
			map[string]pathExtras{app: {Sigs: []string{"k:sig"}}, bb: {}}},
		{"object keyed by store path", "/nix/store",
			`{"` + app + `":{"ca":null,"deriver":"/nix/store/5h989f9kw629g4y1mnpg3q9s30pkh9k0-fx-app.drv","narHash":"sha256-/9aNBf7RvJIoec5ct8wkt6fLFW2za2Gpxpnp4qlDdkY=","narSize":680,"references":[],"registrationTime":1700000000,"signatures":["cache.example-1:c2ln","k2:c2lnMg=="],"ultimate":false},` +
				`"` + data + `":{"ca":"` + ca + `","narHash":"sha256-HQSV/PgXO9v0I+ZuQt71RcPbHcAQxiGhoQk9MT2BpFQ=","narSize":8,"references":[],"signatures":[]},` +
				`"` + bb + `":null}`,
			map[string]pathExtras{app: {Sigs: []string{"cache.example-1:c2ln", "k2:c2lnMg=="}}, data: {Sigs: []string{}, CA: ca}}},
		{"keys without store directory", "/nix/store",
			`{"wmax4jpcbcyvaqcx04skyir4x9j40ygh-fx-app":{"signatures":["k:sig"],"ca":"` + ca + `"}}`,
			map[string]pathExtras{app: {Sigs: []string{"k:sig"}, CA: ca}}},
		{"keys without store directory, other store", "/tmp/store",
			`{"wmax4jpcbcyvaqcx04skyir4x9j40ygh-fx-app":{"signatures":["k:sig"]}}`,
			map[string]pathExtras{"/tmp/store/wmax4jpcbcyvaqcx04skyir4x9j40ygh-fx-app": {Sigs: []string{"k:sig"}}}},
		{"sigs key", "/nix/store",
			`[{"path":"` + app + `","sigs":["old:sig"]}]`,
			map[string]pathExtras{app: {Sigs: []string{"old:sig"}}}},
		{"empty list", "/nix/store", `[]`, map[string]pathExtras{}},
		{"empty object", "/nix/store", `{}`, map[string]pathExtras{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePathInfoJSON([]byte(tt.json), tt.storeDir)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Errorf("got %d entries %v, want %d", len(got), got, len(tt.want))
			}
			for p, w := range tt.want {
				g, ok := got[p]
				if !ok {
					t.Errorf("%s missing from %v", p, got)
					continue
				}
				if len(g.Sigs) != len(w.Sigs) || (len(w.Sigs) > 0 && !reflect.DeepEqual(g.Sigs, w.Sigs)) || g.CA != w.CA {
					t.Errorf("%s = %+v, want %+v", p, g, w)
				}
			}
		})
	}
	for _, bad := range []string{"", "not json", `"string"`, `{"p":"x"}`, `[{"path":1}]`} {
		if got, err := parsePathInfoJSON([]byte(bad), "/nix/store"); err == nil {
			t.Errorf("parsePathInfoJSON(%q) = %v, want an error", bad, got)
		}
	}
}

// fakeStore makes a store directory (a temporary directory, not /nix/store)
// holding one store path with a file and a directory.
func fakeStore(t *testing.T) (store *LocalStore, storePath string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	storePath = filepath.Join(dir, "wmax4jpcbcyvaqcx04skyir4x9j40ygh-fx-app")
	if err := os.MkdirAll(filepath.Join(storePath, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(storePath, "bin", "app"), []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(storePath, "README"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("bin/app", filepath.Join(storePath, "run")); err != nil {
		t.Fatal(err)
	}
	return &LocalStore{StoreDir: dir}, storePath
}

func TestLocalStoreResolveRoot(t *testing.T) {
	store, sp := fakeStore(t)
	work := t.TempDir()
	link := func(target, name string) string {
		t.Helper()
		p := filepath.Join(work, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	result := link(sp, "result")                               // absolute link to the store path
	chain := link("result", "chain")                           // relative link to a link
	intoBin := link(filepath.Join(sp, "bin", "app"), "appbin") // link to a file inside the store path
	deep := link("chain", "deep")                              // three levels
	plain := filepath.Join(work, "plain")
	if err := os.WriteFile(plain, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	outside := link(plain, "outside")
	loopA := filepath.Join(work, "loopA")
	link(loopA, "loopB")
	link(filepath.Join(work, "loopB"), "loopA")

	tests := []struct {
		arg     string
		want    string
		wantErr error // nil: no error expected
	}{
		{sp, sp, nil},
		{sp + "/", sp, nil},
		{filepath.Join(sp, "bin", "app"), sp, nil},
		{filepath.Join(sp, "run"), sp, nil},
		{result, sp, nil},
		{chain, sp, nil},
		{deep, sp, nil},
		{intoBin, sp, nil},
		{plain, "", ErrNotInStore},
		{outside, "", ErrNotInStore},
		{work, "", ErrNotInStore},
		{store.StoreDir, "", ErrNotInStore},
		{filepath.Join(work, "missing"), "", fs.ErrNotExist},
		{loopA, "", errors.New("too many levels")},
	}
	for _, tt := range tests {
		got, err := store.ResolveRoot(tt.arg)
		switch {
		case tt.wantErr == nil && err != nil:
			t.Errorf("ResolveRoot(%s): %v", tt.arg, err)
		case tt.wantErr == nil && got != tt.want:
			t.Errorf("ResolveRoot(%s) = %s, want %s", tt.arg, got, tt.want)
		case tt.wantErr != nil && err == nil:
			t.Errorf("ResolveRoot(%s) = %s, want an error", tt.arg, got)
		case tt.wantErr != nil && !errors.Is(err, tt.wantErr) && !strings.Contains(err.Error(), tt.wantErr.Error()):
			t.Errorf("ResolveRoot(%s) error = %v, want %v", tt.arg, err, tt.wantErr)
		}
	}

	// A relative argument is relative to the working directory.
	t.Chdir(work)
	if got, err := store.ResolveRoot("chain"); err != nil || got != sp {
		t.Errorf("ResolveRoot(chain) from %s = %s, %v; want %s", work, got, err, sp)
	}
}

// TestLocalStoreResolveRootThroughSymlinkedDir: ./result/bin/app is a path
// inside a store path, reached through the ./result symlink, as users
// type it.
func TestLocalStoreResolveRootThroughSymlinkedDir(t *testing.T) {
	store, sp := fakeStore(t)
	work := t.TempDir()
	if err := os.Symlink(sp, filepath.Join(work, "result")); err != nil {
		t.Fatal(err)
	}
	arg := filepath.Join(work, "result", "bin", "app")
	if got, err := store.ResolveRoot(arg); err != nil || got != sp {
		t.Errorf("ResolveRoot(%s) = %q, %v; want %s", arg, got, err, sp)
	}
}

func TestLocalStoreWriteNAR(t *testing.T) {
	store, sp := fakeStore(t)
	var want bytes.Buffer
	if err := nar.Dump(&want, sp); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(want.Bytes())
	info := &narinfo.NarInfo{StorePath: sp, NarHash: mustHashFromHex(t, hex.EncodeToString(sum[:])), NarSize: uint64(want.Len())}

	for _, c := range []spec.Compression{"", spec.CompressionZstd, spec.CompressionXz, spec.CompressionNone} {
		store.Compression = c
		var out bytes.Buffer
		got, err := store.WriteNAR(context.Background(), info, &out)
		if err != nil {
			t.Fatalf("compression %q: %v", c, err)
		}
		wantC := c
		if c == "" {
			wantC = spec.DefaultCompression
		}
		if got != wantC {
			t.Errorf("compression %q: WriteNAR returned %q, want %q", c, got, wantC)
		}
		r, err := codec.NewReader(&out, got)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(dec, want.Bytes()) {
			t.Errorf("compression %q: decompressed output is not the NAR (%v)", c, err)
		}
	}

	for name, edit := range map[string]func(*narinfo.NarInfo){
		"NarHash": func(n *narinfo.NarInfo) { n.NarHash = mustHashFromHex(t, strings.Repeat("00", 32)) },
		"NarSize": func(n *narinfo.NarInfo) { n.NarSize++ },
	} {
		bad := *info
		edit(&bad)
		if _, err := store.WriteNAR(context.Background(), &bad, io.Discard); !errors.Is(err, ErrHashMismatch) {
			t.Errorf("wrong %s: WriteNAR error = %v, want ErrHashMismatch", name, err)
		}
	}
}
