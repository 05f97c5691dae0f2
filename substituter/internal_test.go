package substituter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
)

// TestStatusOf: backend failures are 5xx by kind, never 404.
func TestStatusOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{context.DeadlineExceeded, http.StatusGatewayTimeout},
		{fmt.Errorf("b: %w", context.DeadlineExceeded), http.StatusGatewayTimeout},
		{fmt.Errorf("b: %w: refused", backend.ErrUnreachable), http.StatusServiceUnavailable},
		{errors.Join(fmt.Errorf("a: %w", backend.ErrUnreachable), errors.New("b: other")), http.StatusServiceUnavailable},
		{fmt.Errorf("tag: %w", artifact.ErrNotArtifact), http.StatusBadGateway},
		{fmt.Errorf("m: %w", artifact.ErrHashMismatch), http.StatusBadGateway},
		{fmt.Errorf("b: %w", backend.ErrRegistry), http.StatusBadGateway},
		{fmt.Errorf("b: %w", backend.ErrUnauthorized), http.StatusBadGateway},
		{errors.New("anything"), http.StatusBadGateway},
		{fmt.Errorf("odd: %w", errdef.ErrNotFound), http.StatusBadGateway},
	} {
		if got := statusOf(tc.err); got != tc.want {
			t.Errorf("statusOf(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestRouteOf(t *testing.T) {
	for path, want := range map[string]string{
		"/nix-cache-info":               "/nix-cache-info",
		"/healthz":                      "/healthz",
		"/metrics":                      "/metrics",
		"/abc.narinfo":                  "narinfo",
		"/nar/abc.nar.zst":              "nar",
		"/log/x":                        "other",
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

// TestMetricsWriteGroupsSeries: one HELP and TYPE per described metric,
// series sorted, label values quoted.
func TestMetricsWriteGroupsSeries(t *testing.T) {
	m := newMetrics()
	m.add("nixoci_uploads_total", 1, "kind", "nar", "outcome", "ok")
	m.add("nixoci_corrupt_blobs_total", 1)
	m.add("nixoci_uploads_total", 2, "kind", "nar", "outcome", "ok")
	m.add("nixoci_uploads_total", 1, "kind", `we"ird\`, "outcome", "x")
	m.add("undescribed_total", 1)
	var b strings.Builder
	m.write(&b)
	want := "# HELP nixoci_corrupt_blobs_total Blobs whose content did not match their digest while served.\n" +
		"# TYPE nixoci_corrupt_blobs_total counter\n" +
		"nixoci_corrupt_blobs_total 1\n" +
		"# HELP nixoci_uploads_total Upload requests by kind and outcome.\n" +
		"# TYPE nixoci_uploads_total counter\n" +
		"nixoci_uploads_total{kind=\"nar\",outcome=\"ok\"} 3\n" +
		"nixoci_uploads_total{kind=\"we\\\"ird\\\\\",outcome=\"x\"} 1\n" +
		"undescribed_total 1\n"
	if b.String() != want {
		t.Errorf("metrics:\n%s\nwant:\n%s", b.String(), want)
	}
}

// TestVerifier: a whole, in-order read is checked against the digest; a
// mismatch withholds the last read.
func TestVerifier(t *testing.T) {
	data := bytes.Repeat([]byte("verifier "), 5000)
	d := digest.FromBytes(data)
	bad := bytes.Clone(data)
	bad[100] ^= 1
	newV := func(content []byte) *blobReader {
		r := bytes.NewReader(content)
		return &blobReader{src: r, seeker: r, size: int64(len(data)), h: sha256.New(), want: d, verifying: true}
	}

	v := newV(data)
	got, err := io.ReadAll(v)
	if err != nil || !bytes.Equal(got, data) || v.corrupt {
		t.Errorf("good content: %d bytes, %v, corrupt %v", len(got), err, v.corrupt)
	}

	v = newV(bad)
	got, err = io.ReadAll(v)
	if !errors.Is(err, errCorrupt) || !v.corrupt || len(got) >= len(bad) {
		t.Errorf("bad content: %d of %d bytes, %v, corrupt %v", len(got), len(bad), err, v.corrupt)
	}
	if err != nil && !strings.Contains(err.Error(), d.String()) {
		t.Errorf("error does not name the digest: %v", err)
	}

	// ServeContent's size probe (end, then start) keeps verification on.
	v = newV(bad)
	if n, err := v.Seek(0, io.SeekEnd); err != nil || n != int64(len(bad)) {
		t.Fatal(n, err)
	}
	if _, err := v.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(v); !errors.Is(err, errCorrupt) {
		t.Errorf("after the size probe: %v", err)
	}

	// A read from elsewhere is not verified (a Range request).
	v = newV(bad)
	if _, err := v.Seek(10, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(v); err != nil || len(got) != len(bad)-10 || v.corrupt {
		t.Errorf("ranged read: %d bytes, %v, corrupt %v", len(got), err, v.corrupt)
	}

	// A partial read followed by a rewind verifies from scratch.
	v = newV(data)
	io.ReadFull(v, make([]byte, 1000))
	v.Seek(0, io.SeekStart)
	if _, err := io.ReadAll(v); err != nil || v.corrupt {
		t.Errorf("re-read after rewind: %v, corrupt %v", err, v.corrupt)
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
