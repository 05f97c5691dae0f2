package source

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// drvText is a derivation in Nix's ATerm form with outputs out and dev,
// as nix-instantiate writes it.
func drvText(system, out, dev string) string {
	return `Derive([("dev","` + dev + `","",""),("out","` + out + `","","")],[],[],"` + system +
		`","/bin/sh",["-c","echo > $out"],[("builder","/bin/sh"),("dev","` + dev + `"),("name","hello"),("out","` + out +
		`"),("outputs","out dev"),("system","` + system + `")])`
}

func TestDerivedSystem(t *testing.T) {
	store := t.TempDir()
	const (
		out = "/nix/store/f62g1077pblgdq56h7wqdfzackx40ddv-hello"
		dev = "/nix/store/05imv824p7mc8khn5pyrmjmns5zb2396-hello-dev"
	)
	write := func(name, content string) string {
		if err := os.WriteFile(filepath.Join(store, name), []byte(content), 0o444); err != nil {
			t.Fatal(err)
		}
		return name
	}
	arm := write("a4l18b5wpp3qzac773sj8bvcb4lx1zr7-hello.drv", drvText("aarch64-linux", out, dev))
	other := write("5h989f9kw629g4y1mnpg3q9s30pkh9k0-other.drv", drvText("x86_64-linux", "/nix/store/qc24b2vxd8b277nrd2dpxpikcbz6k14p-other", dev+"x"))
	garbled := write("d7znnwpmkk1py2q31pj6j11vwwp241aa-garbled.drv", "Derive([(")
	floating := write("fd8vbmrsmkq9w2ii1blwqa1xm7ymvdsz-ca.drv", `Derive([("out","","r:sha256","")],[],[],"x86_64-linux","/bin/sh",[],[("name","ca"),("out","/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9"),("system","x86_64-linux")])`)
	huge := write("wmax4jpcbcyvaqcx04skyir4x9j40ygh-huge.drv", drvText("x86_64-linux", out, dev)+strings.Repeat(" ", spec.MaxDerivationSize))
	for _, tc := range []struct {
		name, path, deriver string
		want                string
		wantErr             string
	}{
		{"the out output", out, arm, "aarch64-linux", ""},
		{"another output", dev, arm, "aarch64-linux", ""},
		{"no deriver recorded", out, "", "", ""},
		{"deriver not in the store", out, "0000000000000000000000000000000a-hello.drv", "", ""},
		{"deriver of other paths", out, other, "", "does not list " + out},
		{"deriver that does not parse", out, garbled, "", garbled},
		{"content-addressed deriver (no output paths)", out, floating, "", ""},
		{"deriver too large", out, huge, "", "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := derivedSystem(store, tc.path, tc.deriver)
			if got != tc.want {
				t.Errorf("system = %q, want %q", got, tc.want)
			}
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestWarnMixedSystems: a closure whose paths record two systems is
// reported, naming both; builtin and unknown systems are no conflict.
func TestWarnMixedSystems(t *testing.T) {
	var logs bytes.Buffer
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
	info := func(name, system string) *narinfo.NarInfo {
		return &narinfo.NarInfo{StorePath: "/nix/store/05imv824p7mc8khn5pyrmjmns5zb2396-" + name, System: system}
	}
	warnMixedSystems([]*narinfo.NarInfo{info("a", "x86_64-linux"), info("src", spec.SystemBuiltin), info("b", "")})
	if logs.Len() != 0 {
		t.Errorf("one system warned: %s", logs.String())
	}
	warnMixedSystems([]*narinfo.NarInfo{info("a", "x86_64-linux"), info("b", "aarch64-linux")})
	for _, want := range []string{"different systems", "aarch64-linux (05imv824p7mc8khn5pyrmjmns5zb2396-b)", "x86_64-linux (05imv824p7mc8khn5pyrmjmns5zb2396-a)"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("warning %q lacks %q", logs.String(), want)
		}
	}
}

// BenchmarkDerivedSystem: reading one path's system from its .drv, as a
// push from the local store does for every path (the page cache warm).
func BenchmarkDerivedSystem(b *testing.B) {
	store := b.TempDir()
	const out = "/nix/store/f62g1077pblgdq56h7wqdfzackx40ddv-hello"
	drv := "a4l18b5wpp3qzac773sj8bvcb4lx1zr7-hello.drv"
	if err := os.WriteFile(filepath.Join(store, drv), []byte(drvText("x86_64-linux", out, out+"-dev")), 0o444); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if s, err := derivedSystem(store, out, drv); err != nil || s != "x86_64-linux" {
			b.Fatal(s, err)
		}
	}
}
