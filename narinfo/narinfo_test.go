package narinfo

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// nix28Example is a narinfo written by Nix 2.8.
const nix28Example = `StorePath: /nix/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a
URL: nar/1prr0cy3xdcfc24i4wyzjgi9xrngc3ygil3zwrm2q1yk6pbbkgbn.nar.xz
Compression: xz
FileHash: sha256:1prr0cy3xdcfc24i4wyzjgi9xrngc3ygil3zwrm2q1yk6pbbkgbn
FileSize: 292
NarHash: sha256:1gfqn9ffzch123l95qr52w84km7q2qs00vjsqhr2qac5vnyzb8iy
NarSize: 616
References: 815rmnjvs2y7wkiqzyz3xaxaldh7sb7s-fx-busybox dc7cd44vbv9zcm8ssgc3l5xqhizicrxk-fx-data-a
Deriver: ijabbqbc9khnzxnq8z2g1pkxzgijswvl-fx-app-a.drv
Sig: fx-1:13IzyLa8/qCy2JnnxpBi2m7nJTPizNorsXkrKc1U0+YjhLsIFHVmVzcMSSLC/Nkx1j7s5UVmh2DrAbh/uwbaAA==
`

const (
	exampleNarHash    = "sha256:1gfqn9ffzch123l95qr52w84km7q2qs00vjsqhr2qac5vnyzb8iy"
	exampleNarHashHex = "3ea2f5bddd85292c32c45a6e003416f8d449101725e392e81001b2ef5cb2d8bd"
	exampleNarHashB64 = "PqL1vd2FKSwyxFpuADQW+NRJEBcl45LoEAGy71yy2L0="
)

// minimal is the smallest narinfo Parse accepts.
const minimal = `StorePath: /nix/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a
URL: nar/x.nar
NarHash: sha256:1gfqn9ffzch123l95qr52w84km7q2qs00vjsqhr2qac5vnyzb8iy
NarSize: 616
`

func mustParse(t testing.TB, s string) *NarInfo {
	t.Helper()
	n, err := Parse(strings.NewReader(s))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return n
}

func mustFormat(t testing.TB, n *NarInfo) string {
	t.Helper()
	b, err := n.Format()
	if err != nil {
		t.Fatalf("Format: %v", err)
	}
	return string(b)
}

func TestParseNix28Example(t *testing.T) {
	got := mustParse(t, nix28Example)
	want := &NarInfo{
		StorePath:   "/nix/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a",
		URL:         "nar/1prr0cy3xdcfc24i4wyzjgi9xrngc3ygil3zwrm2q1yk6pbbkgbn.nar.xz",
		Compression: "xz",
		FileHash:    "sha256:1prr0cy3xdcfc24i4wyzjgi9xrngc3ygil3zwrm2q1yk6pbbkgbn",
		FileSize:    292,
		NarHash:     exampleNarHash,
		NarSize:     616,
		References: []string{
			"815rmnjvs2y7wkiqzyz3xaxaldh7sb7s-fx-busybox",
			"dc7cd44vbv9zcm8ssgc3l5xqhizicrxk-fx-data-a",
		},
		Deriver: "ijabbqbc9khnzxnq8z2g1pkxzgijswvl-fx-app-a.drv",
		Sigs:    []string{"fx-1:13IzyLa8/qCy2JnnxpBi2m7nJTPizNorsXkrKc1U0+YjhLsIFHVmVzcMSSLC/Nkx1j7s5UVmh2DrAbh/uwbaAA=="},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse:\n got %+v\nwant %+v", got, want)
	}
	if dir := got.StoreDir(); dir != "/nix/store" {
		t.Errorf("StoreDir = %q, want /nix/store", dir)
	}
	if h := got.HashPart(); h != "cl0ai7xw811mpinmj9bg20gvr0k8ibg7" {
		t.Errorf("HashPart = %q", h)
	}
}

// TestRoundTrip checks that narinfos Nix writes survive Parse and Format
// byte for byte.
func TestRoundTrip(t *testing.T) {
	tests := map[string]string{
		"nix 2.8 example": nix28Example,
		"content addressed": `StorePath: /nix/store/6h9lcbx523532ax1c5g2351w9bm8ykhy-f.txt
URL: nar/17gd6zzlkx90irc6qawagdkgh1d7qvlnq46yjf7xiqw9ycz7zq4a.nar.xz
Compression: xz
FileHash: sha256:17gd6zzlkx90irc6qawagdkgh1d7qvlnq46yjf7xiqw9ycz7zq4a
FileSize: 128
NarHash: sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw
NarSize: 120
References: 
Sig: test-1:sDkkusDzg2ncGMDNsrF4LsN6m/usTAIdokKcxhaT3yYFQ5wEx7xQxnEOzUe50pWPjPhU/PQo2StTGk9bzX8LCg==
CA: fixed:r:sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw
`,
		"all fields and extras": `StorePath: /gnu/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a
URL: nar/x.nar.zst
Compression: zstd
FileHash: sha256:1prr0cy3xdcfc24i4wyzjgi9xrngc3ygil3zwrm2q1yk6pbbkgbn
FileSize: 292
NarHash: sha256:1gfqn9ffzch123l95qr52w84km7q2qs00vjsqhr2qac5vnyzb8iy
NarSize: 616
References: cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a
Deriver: ijabbqbc9khnzxnq8z2g1pkxzgijswvl-fx-app-a.drv
System: x86_64-linux
Sig: a-1:AAAA
Sig: b-1:BBBB
CA: text:sha256:1gfqn9ffzch123l95qr52w84km7q2qs00vjsqhr2qac5vnyzb8iy
Zeta: last
Alpha: 
Zeta: again
`,
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			if got := mustFormat(t, mustParse(t, in)); got != in {
				t.Errorf("Format(Parse(in)) differs\n got:\n%s\nwant:\n%s", got, in)
			}
		})
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		check func(*NarInfo) bool
	}{
		{"missing Compression means bzip2", minimal,
			func(n *NarInfo) bool { return n.Compression == "bzip2" }},
		{"no final newline", strings.TrimSuffix(minimal, "\n"),
			func(n *NarInfo) bool { return n.NarSize == 616 }},
		{"trailing empty lines", minimal + "\n\n",
			func(n *NarInfo) bool { return n.NarSize == 616 }},
		{"empty References", minimal + "References: \n",
			func(n *NarInfo) bool { return n.References == nil }},
		{"extra spaces in References", minimal + "References:  815rmnjvs2y7wkiqzyz3xaxaldh7sb7s-fx-busybox  dc7cd44vbv9zcm8ssgc3l5xqhizicrxk-fx-data-a \n",
			func(n *NarInfo) bool { return len(n.References) == 2 }},
		{"unknown deriver", minimal + "Deriver: unknown-deriver\n",
			func(n *NarInfo) bool { return n.Deriver == "" }},
		{"unknown keys kept in order", "X-Foo: 1\n" + minimal + "Bar.baz: two words\nX-Foo: 3\n",
			func(n *NarInfo) bool {
				return reflect.DeepEqual(n.Extra, []Field{{"X-Foo", "1"}, {"Bar.baz", "two words"}, {"X-Foo", "3"}})
			}},
		{"unknown key is case sensitive", minimal + "narsize: 1\n",
			func(n *NarInfo) bool { return n.NarSize == 616 && len(n.Extra) == 1 }},
		{"hex NarHash", strings.Replace(minimal, exampleNarHash, "sha256:"+exampleNarHashHex, 1),
			func(n *NarInfo) bool { return n.NarHash == exampleNarHash }},
		{"upper-case hex NarHash", strings.Replace(minimal, exampleNarHash, "sha256:"+strings.ToUpper(exampleNarHashHex), 1),
			func(n *NarInfo) bool { return n.NarHash == exampleNarHash }},
		{"base64 NarHash", strings.Replace(minimal, exampleNarHash, "sha256:"+exampleNarHashB64, 1),
			func(n *NarInfo) bool { return n.NarHash == exampleNarHash }},
		{"SRI NarHash", strings.Replace(minimal, exampleNarHash, "sha256-"+exampleNarHashB64, 1),
			func(n *NarInfo) bool { return n.NarHash == exampleNarHash }},
		{"SRI FileHash", minimal + "FileHash: sha256-" + exampleNarHashB64 + "\n",
			func(n *NarInfo) bool { return n.FileHash == exampleNarHash }},
		{"other store dir", strings.Replace(minimal, "/nix/store/", "/var/lib/nix/store/", 1),
			func(n *NarInfo) bool { return n.StoreDir() == "/var/lib/nix/store" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := mustParse(t, tt.in)
			if !tt.check(n) {
				t.Errorf("unexpected result %+v", n)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	const sp = "StorePath: /nix/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a\n"
	tests := []struct {
		name string
		in   string
		line int // 0 if the error is not about a line
		kind error
		msg  string
	}{
		{"bad FileSize", sp + "URL: u\nCompression: xz\nFileSize: x\n", 4, ErrInvalidValue,
			`narinfo: line 4: FileSize: invalid number "x"`},
		{"no separator", sp + "URL: u\nCompression xz\n", 3, ErrSyntax,
			`narinfo: line 3: missing ": " in "Compression xz"`},
		{"colon without space", sp + "References:\n", 2, ErrSyntax, `missing ": "`},
		{"empty line in the middle", sp + "\nURL: u\n", 2, ErrSyntax, "empty line"},
		{"CRLF", sp + "URL: u\r\n", 2, ErrSyntax, "carriage return"},
		{"CR in value", "URL: a\rb\n", 1, ErrSyntax, "carriage return"},
		{"empty key", ": v\n", 1, ErrSyntax, "empty key"},
		{"bad key", "Foo Bar: v\n", 1, ErrSyntax, `invalid character ' ' in key "Foo Bar"`},
		{"duplicate key", sp + "URL: u\nURL: v\n", 3, ErrSyntax, "duplicate URL"},
		{"duplicate StorePath", sp + sp, 2, ErrSyntax, "duplicate StorePath"},
		{"relative StorePath", "StorePath: cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a\n", 1, ErrInvalidValue, "not an absolute store path"},
		{"root store dir", "StorePath: /cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a\n", 1, ErrInvalidValue, "store directory"},
		{"unclean store dir", "StorePath: /nix//store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a\n", 1, ErrInvalidValue, "store directory"},
		{"bad hash char", "StorePath: /nix/store/el0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a\n", 1, ErrInvalidValue, "hash part"},
		{"no dash", "StorePath: /nix/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7xfx-app-a\n", 1, ErrInvalidValue, "base name"},
		{"empty name", "StorePath: /nix/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-\n", 1, ErrInvalidValue, "base name"},
		{"bad name char", "StorePath: /nix/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-a@b\n", 1, ErrInvalidValue, `invalid character '@' in name`},
		{"path below store path", "StorePath: /nix/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-a/b\n", 1, ErrInvalidValue, `"b" is not a store path base name`},
		{"long name", "StorePath: /nix/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-" + strings.Repeat("a", 212) + "\n", 1, ErrInvalidValue, "longer than 211"},
		{"empty URL", sp + "URL: \n", 2, ErrInvalidValue, "URL: empty value"},
		{"bad Compression", "Compression: gzip2\n", 1, ErrInvalidValue, `unknown compression "gzip2"`},
		{"empty Compression", "Compression: \n", 1, ErrInvalidValue, "unknown compression"},
		{"md5 NarHash", "NarHash: md5:00000000000000000000000000000000\n", 1, ErrInvalidValue, `unsupported algorithm "md5"`},
		{"unprefixed NarHash", "NarHash: " + exampleNarHashHex + "\n", 1, ErrInvalidValue, "missing \"sha256:\" prefix"},
		{"short NarHash", "NarHash: sha256:abc\n", 1, ErrInvalidValue, "NarHash: invalid hash"},
		{"bad nix32 NarHash", "NarHash: sha256:egfqn9ffzch123l95qr52w84km7q2qs00vjsqhr2qac5vnyzb8iy\n", 1, ErrInvalidValue, "NarHash: invalid hash"},
		{"bad FileHash", "FileHash: sha256:\n", 1, ErrInvalidValue, "FileHash: invalid hash"},
		{"negative NarSize", "NarSize: -1\n", 1, ErrInvalidValue, `NarSize: invalid number "-1"`},
		{"zero NarSize", "NarSize: 0\n", 1, ErrInvalidValue, "NarSize: must not be 0"},
		{"huge NarSize", "NarSize: 18446744073709551616\n", 1, ErrInvalidValue, "invalid number"},
		{"bad reference", "References: foo\n", 1, ErrInvalidValue, `References: "foo" is not a store path base name`},
		{"absolute reference", "References: /nix/store/815rmnjvs2y7wkiqzyz3xaxaldh7sb7s-fx-busybox\n", 1, ErrInvalidValue, "References:"},
		{"duplicate reference", "References: 815rmnjvs2y7wkiqzyz3xaxaldh7sb7s-fx-busybox 815rmnjvs2y7wkiqzyz3xaxaldh7sb7s-fx-busybox\n", 1, ErrInvalidValue, "duplicate reference"},
		{"empty Deriver", "Deriver: \n", 1, ErrInvalidValue, "Deriver:"},
		{"bad Sig", "Sig: nocolon\n", 1, ErrInvalidValue, "Sig: signature"},
		{"Sig without name", "Sig: :abc\n", 1, ErrInvalidValue, "Sig: signature"},
		{"missing StorePath", "URL: u\n", 0, ErrMissingField, "narinfo: missing StorePath"},
		{"missing URL", sp, 0, ErrMissingField, "narinfo: missing URL"},
		{"missing NarHash", sp + "URL: u\nNarSize: 1\n", 0, ErrMissingField, "narinfo: missing NarHash"},
		{"missing NarSize", sp + "URL: u\nNarHash: " + exampleNarHash + "\n", 0, ErrMissingField, "narinfo: missing NarSize"},
		{"empty input", "", 0, ErrMissingField, "missing StorePath"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := Parse(strings.NewReader(tt.in))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", n)
			}
			if !errors.Is(err, tt.kind) {
				t.Errorf("error %q does not match %v", err, tt.kind)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not contain %q", err, tt.msg)
			}
			var pe *ParseError
			switch {
			case tt.line == 0 && errors.As(err, &pe):
				t.Errorf("error %q names line %d, want none", err, pe.Line)
			case tt.line != 0 && !errors.As(err, &pe):
				t.Errorf("error %q is not a *ParseError", err)
			case tt.line != 0 && pe.Line != tt.line:
				t.Errorf("error %q names line %d, want %d", err, pe.Line, tt.line)
			}
		})
	}
}

func TestParseTooLarge(t *testing.T) {
	in := minimal + "X-Pad: " + strings.Repeat("a", MaxSize) + "\n"
	_, err := Parse(strings.NewReader(in))
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Parse of %d bytes: err = %v, want ErrTooLarge", len(in), err)
	}
	// Exactly MaxSize bytes is fine.
	in = in[:MaxSize-1] + "\n"
	if _, err := Parse(strings.NewReader(in)); err != nil {
		t.Fatalf("Parse of %d bytes: %v", len(in), err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("boom") }

func TestParseReadError(t *testing.T) {
	if _, err := Parse(errReader{}); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err = %v, want read error", err)
	}
}

// valid returns a valid hand-built NarInfo.
func valid() *NarInfo {
	return &NarInfo{
		StorePath:   DefaultStoreDir + "/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a",
		URL:         "nar/x.nar",
		Compression: "none",
		NarHash:     exampleNarHash,
		NarSize:     616,
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*NarInfo)
		want   string
	}{
		{"minimal, empty References line", func(*NarInfo) {}, `StorePath: /nix/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a
URL: nar/x.nar
Compression: none
NarHash: sha256:1gfqn9ffzch123l95qr52w84km7q2qs00vjsqhr2qac5vnyzb8iy
NarSize: 616
References: 
`},
		{"hashes normalised, FileSize without FileHash", func(n *NarInfo) {
			n.NarHash = "sha256-" + exampleNarHashB64
			n.FileHash = "sha256:" + exampleNarHashHex
			n.FileSize = 0
		}, `StorePath: /nix/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a
URL: nar/x.nar
Compression: none
FileHash: sha256:1gfqn9ffzch123l95qr52w84km7q2qs00vjsqhr2qac5vnyzb8iy
FileSize: 0
NarHash: sha256:1gfqn9ffzch123l95qr52w84km7q2qs00vjsqhr2qac5vnyzb8iy
NarSize: 616
References: 
`},
		{"all fields in Nix order", func(n *NarInfo) {
			n.Extra = []Field{{"Zz", "z"}, {"Aa", ""}}
			n.CA = "fixed:r:" + exampleNarHash
			n.Sigs = []string{"b:2", "a:1"}
			n.System = "aarch64-linux"
			n.Deriver = "ijabbqbc9khnzxnq8z2g1pkxzgijswvl-fx-app-a.drv"
			n.References = []string{"dc7cd44vbv9zcm8ssgc3l5xqhizicrxk-fx-data-a", "815rmnjvs2y7wkiqzyz3xaxaldh7sb7s-fx-busybox"}
			n.FileSize = 5
		}, `StorePath: /nix/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a
URL: nar/x.nar
Compression: none
FileSize: 5
NarHash: sha256:1gfqn9ffzch123l95qr52w84km7q2qs00vjsqhr2qac5vnyzb8iy
NarSize: 616
References: dc7cd44vbv9zcm8ssgc3l5xqhizicrxk-fx-data-a 815rmnjvs2y7wkiqzyz3xaxaldh7sb7s-fx-busybox
Deriver: ijabbqbc9khnzxnq8z2g1pkxzgijswvl-fx-app-a.drv
System: aarch64-linux
Sig: b:2
Sig: a:1
CA: fixed:r:sha256:1gfqn9ffzch123l95qr52w84km7q2qs00vjsqhr2qac5vnyzb8iy
Zz: z
Aa: 
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := valid()
			tt.modify(n)
			got := mustFormat(t, n)
			if got != tt.want {
				t.Errorf("Format:\n got:\n%s\nwant:\n%s", got, tt.want)
			}
			var buf bytes.Buffer
			m, err := n.WriteTo(&buf)
			if err != nil || m != int64(len(tt.want)) || buf.String() != tt.want {
				t.Errorf("WriteTo = %d, %v, %q; want same bytes as Format", m, err, buf.String())
			}
		})
	}
}

// TestFormatRefusesInvalid checks that Format, WriteTo and Validate reject
// invalid values, in particular any that would inject a line.
func TestFormatRefusesInvalid(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*NarInfo)
		kind   error
	}{
		{"newline in URL", func(n *NarInfo) { n.URL = "nar/x\nSig: evil:AAAA" }, ErrInvalidValue},
		{"CR in URL", func(n *NarInfo) { n.URL = "nar/x\r" }, ErrInvalidValue},
		{"newline in System", func(n *NarInfo) { n.System = "x86_64-linux\n" }, ErrInvalidValue},
		{"newline in CA", func(n *NarInfo) { n.CA = "a\nb: c" }, ErrInvalidValue},
		{"newline in Sig", func(n *NarInfo) { n.Sigs = []string{"k:AAAA\nURL: x"} }, ErrInvalidValue},
		{"newline in StorePath", func(n *NarInfo) { n.StorePath += "\nURL: x" }, ErrInvalidValue},
		{"newline in store dir", func(n *NarInfo) { n.StorePath = "/nix\n/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a" }, ErrInvalidValue},
		{"newline in reference", func(n *NarInfo) { n.References = []string{"815rmnjvs2y7wkiqzyz3xaxaldh7sb7s-fx\nURL: x"} }, ErrInvalidValue},
		{"space in reference", func(n *NarInfo) {
			n.References = []string{"815rmnjvs2y7wkiqzyz3xaxaldh7sb7s-a 815rmnjvs2y7wkiqzyz3xaxaldh7sb7s-b"}
		}, ErrInvalidValue},
		{"newline in Deriver", func(n *NarInfo) { n.Deriver = "ijabbqbc9khnzxnq8z2g1pkxzgijswvl-a.drv\n" }, ErrInvalidValue},
		{"newline in NarHash", func(n *NarInfo) { n.NarHash += "\n" }, ErrInvalidValue},
		{"newline in FileHash", func(n *NarInfo) { n.FileHash = exampleNarHash + "\nX: y" }, ErrInvalidValue},
		{"newline in Compression", func(n *NarInfo) { n.Compression = "xz\n" }, ErrInvalidValue},
		{"newline in extra value", func(n *NarInfo) { n.Extra = []Field{{"X", "a\nb: c"}} }, ErrInvalidValue},
		{"newline in extra key", func(n *NarInfo) { n.Extra = []Field{{"X\nY", "a"}} }, ErrSyntax},
		{"colon in extra key", func(n *NarInfo) { n.Extra = []Field{{"X: Y", "a"}} }, ErrSyntax},
		{"empty extra key", func(n *NarInfo) { n.Extra = []Field{{"", "a"}} }, ErrSyntax},
		{"extra duplicates known key", func(n *NarInfo) { n.Extra = []Field{{"Sig", "a:b"}} }, ErrSyntax},
		{"unknown compression", func(n *NarInfo) { n.Compression = "gzip" }, ErrInvalidValue},
		{"sha512 NarHash", func(n *NarInfo) { n.NarHash = "sha512:" + strings.Repeat("0", 128) }, ErrInvalidValue},
		{"duplicate reference", func(n *NarInfo) {
			n.References = []string{"815rmnjvs2y7wkiqzyz3xaxaldh7sb7s-fx-busybox", "815rmnjvs2y7wkiqzyz3xaxaldh7sb7s-fx-busybox"}
		}, ErrInvalidValue},
		{"empty Sig", func(n *NarInfo) { n.Sigs = []string{""} }, ErrInvalidValue},
		{"missing StorePath", func(n *NarInfo) { n.StorePath = "" }, ErrMissingField},
		{"missing URL", func(n *NarInfo) { n.URL = "" }, ErrMissingField},
		{"missing Compression", func(n *NarInfo) { n.Compression = "" }, ErrMissingField},
		{"missing NarHash", func(n *NarInfo) { n.NarHash = "" }, ErrMissingField},
		{"missing NarSize", func(n *NarInfo) { n.NarSize = 0 }, ErrMissingField},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := valid()
			tt.modify(n)
			if err := n.Validate(); !errors.Is(err, tt.kind) {
				t.Errorf("Validate: err = %v, want %v", err, tt.kind)
			}
			b, err := n.Format()
			if !errors.Is(err, tt.kind) || b != nil {
				t.Errorf("Format = %q, %v; want nil, %v", b, err, tt.kind)
			}
			var buf bytes.Buffer
			if m, err := n.WriteTo(&buf); err == nil || m != 0 || buf.Len() != 0 {
				t.Errorf("WriteTo = %d, %v and wrote %q; want error and nothing written", m, err, buf.String())
			}
		})
	}
}

func TestStoreDirHashPart(t *testing.T) {
	tests := []struct{ path, dir, hash string }{
		{"/nix/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a", "/nix/store", "cl0ai7xw811mpinmj9bg20gvr0k8ibg7"},
		{"/gnu/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-x", "/gnu/store", "cl0ai7xw811mpinmj9bg20gvr0k8ibg7"},
		{"/nix/store/short", "/nix/store", ""},
		{"", "", ""},
	}
	for _, tt := range tests {
		n := &NarInfo{StorePath: tt.path}
		if got := n.StoreDir(); got != tt.dir {
			t.Errorf("StoreDir(%q) = %q, want %q", tt.path, got, tt.dir)
		}
		if got := n.HashPart(); got != tt.hash {
			t.Errorf("HashPart(%q) = %q, want %q", tt.path, got, tt.hash)
		}
	}
}
