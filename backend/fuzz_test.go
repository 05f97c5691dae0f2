package backend

import "testing"

// FuzzParseRef: ParseRef never panics, and what it accepts prints back
// to a string that parses to the same value.
func FuzzParseRef(f *testing.F) {
	for _, s := range []string{
		"oci:/srv/nix", "oci:/srv/nix:tag", "oci:dir@sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
		"127.0.0.1:5000/a/b:c", "ghcr.io/me/nix@sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
		"oci:", "./x", "HOST/Repo", "a/b:-x", "oci:~/x:y",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if err != nil {
			return
		}
		again, err := ParseRef(r.String())
		if err != nil {
			t.Fatalf("ParseRef(%q) = %+v, whose String %q does not parse: %v", s, r, r.String(), err)
		}
		if again != r {
			t.Fatalf("ParseRef(%q) = %+v, but its String %q parses to %+v", s, r, r.String(), again)
		}
	})
}
