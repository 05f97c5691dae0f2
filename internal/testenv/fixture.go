package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Fixture is a small real closure built by the real Nix.
type Fixture struct {
	// App is /nix/store/...-fx-app-<salt>. Its bin/app is a
	// "#!<Busybox>/bin/sh" script that runs `<Busybox>/bin/busybox cat
	// <Data>/share/msg`, so App references Busybox and Data.
	App string
	// Busybox is /nix/store/...-fx-busybox: bin/busybox (a copy of the static
	// /bin/busybox of Debian's busybox-static) and bin/sh -> busybox. It does
	// not depend on the salt, so every fixture shares it.
	Busybox string
	// Data is /nix/store/...-fx-data-<salt>, holding every NAR node type:
	//
	//	share/msg                  "hello from <salt>\n"
	//	share/empty                empty regular file
	//	share/link -> msg          symlink
	//	share/nested/deeper/file   "nested <salt>\n"
	//	share/nested/emptydir/     empty directory
	//	bin/tool                   executable script
	Data string
	// Closure is App, Busybox and Data, sorted.
	Closure []string
	// Message is the exact output of running App/bin/app: "hello from <salt>\n".
	Message string
}

// fixtureNix is the Nix expression of a fixture; SALT is replaced by the salt
// (already checked to be made of safe characters). The busybox derivation does
// not mention the salt, so it is the same derivation (same path) for all salts.
const fixtureNix = `let
  mk = name: script: env: derivation ({
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
    PATH = "/usr/bin:/bin";
  } // env);

  busybox = mk "fx-busybox" ''
    set -e
    mkdir -p $out/bin
    cp /bin/busybox $out/bin/busybox
    chmod 0555 $out/bin/busybox
    ln -s busybox $out/bin/sh
  '' { };

  data = mk "fx-data-SALT" ''
    set -e
    mkdir -p $out/share/nested/deeper $out/share/nested/emptydir $out/bin
    printf 'hello from %s\n' "$salt" > $out/share/msg
    : > $out/share/empty
    ln -s msg $out/share/link
    printf 'nested %s\n' "$salt" > $out/share/nested/deeper/file
    printf '#!/bin/sh\necho tool %s\n' "$salt" > $out/bin/tool
    chmod 0555 $out/bin/tool
  '' { salt = "SALT"; };

  app = mk "fx-app-SALT" ''
    set -e
    mkdir -p $out/bin
    printf '#!%s/bin/sh\nexec %s/bin/busybox cat %s/share/msg\n' "$busybox" "$busybox" "$data" > $out/bin/app
    chmod 0555 $out/bin/app
  '' { inherit busybox data; };
in
{ inherit busybox data app; }
`

// BuildFixture builds a Fixture with the real Nix: it writes a .nix file into
// t.TempDir() and runs `nix-build FILE --no-out-link` on it. Derivations use
// builder = "/bin/sh", args = [ "-c" script ], PATH = "/usr/bin:/bin" and
// system = builtins.currentSystem.
//
// salt (non-empty; letters, digits and "._+-" only) makes distinct closures:
// different App and Data paths, the same Busybox path. The same salt always
// gives the same paths. It needs nix-build and /bin/busybox (Debian
// busybox-static); without them the test is skipped (see Tool).
func BuildFixture(t testing.TB, salt string) Fixture {
	t.Helper()
	if err := checkName(salt); err != nil {
		t.Fatalf("BuildFixture: bad salt %q: %v", salt, err)
	}
	nixBuild := Tool(t, "nix-build")
	requireFile(t, "/bin/busybox", "a static busybox, from Debian's busybox-static")

	file := filepath.Join(t.TempDir(), "fixture-"+salt+".nix")
	if err := os.WriteFile(file, []byte(strings.ReplaceAll(fixtureNix, "SALT", salt)), 0o644); err != nil {
		t.Fatalf("BuildFixture: %v", err)
	}
	out := Run(t, nixBuild, file, "--no-out-link")

	var f Fixture
	for _, p := range strings.Fields(out) {
		switch {
		case strings.HasSuffix(p, "-fx-app-"+salt):
			f.App = p
		case strings.HasSuffix(p, "-fx-busybox"):
			f.Busybox = p
		case strings.HasSuffix(p, "-fx-data-"+salt):
			f.Data = p
		}
	}
	if f.App == "" || f.Busybox == "" || f.Data == "" {
		t.Fatalf("BuildFixture: nix-build %s printed %q; want the paths of fx-app-%s, fx-busybox and fx-data-%s", file, out, salt, salt)
	}
	f.Closure = []string{f.App, f.Busybox, f.Data}
	slices.Sort(f.Closure)
	f.Message = "hello from " + salt + "\n"
	return f
}

// BuildDerivation builds an arbitrary derivation with the real Nix and returns
// its output path. script is run by /bin/sh -c with $out set and PATH =
// /usr/bin:/bin. refs are store paths the output may reference: they become
// inputs of the derivation (through builtins.storePath) and are put in the
// script's environment as $ref0, $ref1, ... and, space-separated, as $refs.
// A reference to one of them written into $out is registered by Nix as a
// reference of the output.
func BuildDerivation(t testing.TB, name, script string, refs ...string) string {
	t.Helper()
	if err := checkName(name); err != nil {
		t.Fatalf("BuildDerivation: bad name %q: %v", name, err)
	}
	if strings.ContainsRune(script, 0) {
		t.Fatalf("BuildDerivation %s: the script contains a NUL byte", name)
	}
	nixBuild := Tool(t, "nix-build")

	var b strings.Builder
	b.WriteString("derivation {\n")
	fmt.Fprintf(&b, "  name = %s;\n", nixString(name))
	b.WriteString("  system = builtins.currentSystem;\n")
	b.WriteString("  builder = \"/bin/sh\";\n")
	fmt.Fprintf(&b, "  args = [ \"-c\" %s ];\n", nixString(script))
	b.WriteString("  PATH = \"/usr/bin:/bin\";\n")
	b.WriteString("  refs = [")
	for _, r := range refs {
		fmt.Fprintf(&b, " (builtins.storePath %s)", nixString(r))
	}
	b.WriteString(" ];\n")
	for i, r := range refs {
		fmt.Fprintf(&b, "  ref%d = builtins.storePath %s;\n", i, nixString(r))
	}
	b.WriteString("}\n")

	file := filepath.Join(t.TempDir(), name+".nix")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatalf("BuildDerivation: %v", err)
	}
	out := Run(t, nixBuild, file, "--no-out-link")
	if !strings.HasPrefix(out, "/") || strings.ContainsAny(out, " \n") {
		t.Fatalf("BuildDerivation %s: nix-build %s printed %q; want one store path", name, file, out)
	}
	return out
}

// checkName accepts what is safe both as part of a store path name and inside
// a shell printf argument and a Nix string without escaping.
func checkName(s string) error {
	if s == "" {
		return fmt.Errorf("empty")
	}
	if len(s) > 100 {
		return fmt.Errorf("longer than 100 bytes")
	}
	if s[0] == '.' {
		return fmt.Errorf("starts with '.'")
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._+-", r)) {
			return fmt.Errorf("character %q not allowed (letters, digits and ._+- only)", r)
		}
	}
	return nil
}

// nixString renders s as a Nix double-quoted string literal.
func nixString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '$':
			if i+1 < len(s) && s[i+1] == '{' {
				b.WriteString(`\$`)
			} else {
				b.WriteByte('$')
			}
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
