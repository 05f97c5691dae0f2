package substituter

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
)

func TestRouteOf(t *testing.T) {
	for path, want := range map[string]string{
		"/nix-cache-info":               "/nix-cache-info",
		"/healthz":                      "/healthz",
		"/metrics":                      "/metrics",
		"/v2/":                          "other",
		"/abc.narinfo":                  "narinfo",
		"/nar/abc.nar.zst":              "nar",
		"/log/x":                        "log",
		"/realisations/x.doi":           "realisation",
		"/build-trace-v2/x.drv/out.doi": "realisation",
		"/debuginfo/x":                  "debuginfo",
		"/abc.ls":                       "listing",
		"/x/abc.ls":                     "other",
		"/":                             "other",
		"/nix-cache-info/x":             "other",
		"/" + strings.Repeat("a", 1000): "other",
	} {
		r, _ := http.NewRequest(http.MethodGet, "http://x"+path, nil)
		if got := routeOf(r); got != want {
			t.Errorf("routeOf(%.40s) = %q, want %q", path, got, want)
		}
	}
}

// TestNameChecks: the hand-written name checks accept exactly what the
// protocol's patterns describe.
func TestNameChecks(t *testing.T) {
	narinfoRE := regexp.MustCompile(`^([0-9a-df-np-sv-z]{32})\.narinfo$`)
	narRE := regexp.MustCompile(`^([0-9a-df-np-sv-z]{52})\.nar(\.xz|\.zst)?$`)
	hash32 := "0123456789abcdfghijklmnpqrsvwxyz"
	hash52 := hash32 + "0123456789abcdfghijk"
	inputs := []string{
		"", ".narinfo", ".nar", hash32, hash52,
		hash32 + ".narinfo", hash32 + ".narinfo.narinfo", hash32[1:] + ".narinfo", hash32 + "0.narinfo",
		hash52 + ".nar", hash52 + ".nar.xz", hash52 + ".nar.zst", hash52 + ".nar.gz", hash52 + ".nar.", hash52 + ".narinfo",
		hash52 + ".nar.zst.zst", hash52[1:] + ".nar", hash52 + "0.nar", hash32 + ".nar", hash52 + ".nar.xz\n",
		hash32 + ".narinfo\n", hash32 + ".narinfo\x00", strings.ToUpper(hash32) + ".narinfo",
	}
	// Every one-byte change of a valid name.
	for _, valid := range []string{hash32 + ".narinfo", hash52 + ".nar.zst"} {
		for i := range len(valid) {
			for _, c := range []byte{'e', 'o', 't', 'u', 'A', '.', '/', 0, 0xff, 'a'} {
				b := []byte(valid)
				b[i] = c
				inputs = append(inputs, string(b))
			}
		}
	}
	for _, in := range inputs {
		h, ok := narinfoHash(in)
		m := narinfoRE.FindStringSubmatch(in)
		if ok != (m != nil) || ok && h != m[1] {
			t.Errorf("narinfoHash(%q) = %q, %v; pattern says %q", in, h, ok, m)
		}
		h, ext, ok := narName(in)
		m = narRE.FindStringSubmatch(in)
		if ok != (m != nil) || ok && (h != m[1] || ext != m[2]) {
			t.Errorf("narName(%q) = %q, %q, %v; pattern says %q", in, h, ext, ok, m)
		}
	}
}
