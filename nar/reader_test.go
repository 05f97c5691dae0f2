package nar

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"
)

func dirItem(p string) item { return item{Header: Header{Path: p, Type: TypeDirectory}} }

func regItem(p, content string, executable bool) item {
	return item{
		Header:  Header{Path: p, Type: TypeRegular, Size: int64(len(content)), Executable: executable},
		Content: content,
	}
}

func symItem(p, target string) item {
	return item{Header: Header{Path: p, Type: TypeSymlink, LinkTarget: target}}
}

// treeItems is a tree in NAR order, exercising every node type, padding of
// every length, names with spaces, unicode and bytes sorting around '/'.
func treeItems() []item {
	return []item{
		dirItem("/"),
		dirItem("/a"),
		regItem("/a/x", "in a", false),
		regItem("/a b", "space", false),
		regItem("/a!", "bang", false),
		dirItem("/a-c"),
		dirItem("/a-c/deeper"),
		dirItem("/a-c/deeper/empty dir"),
		regItem("/a-c/deeper/f", strings.Repeat("z", 17), false),
		dirItem("/bin"),
		regItem("/bin/tool", "#!/bin/sh\necho hi\n", true),
		regItem("/empty", "", false),
		regItem("/exec-empty", "", true),
		symItem("/link", "a-c/deeper/f"),
		symItem("/link-abs", "/nix/store/x"),
		symItem("/link-up", ".."),
		regItem("/p1", "1", false),
		regItem("/p7", "1234567", false),
		regItem("/p8", "12345678", false),
		regItem("/p9", "123456789", false),
		regItem("/~nix~case~hack~1", "case hack names are just names", false),
		regItem("/ünïcødé ☃", strings.Repeat("big\n", 100000), false),
	}
}

func TestRoundTripGoNixWriter(t *testing.T) {
	tests := []struct {
		name  string
		items []item
	}{
		{"regular root", []item{regItem("/", "hello\n", false)}},
		{"empty root", []item{regItem("/", "", false)}},
		{"executable root", []item{regItem("/", "#!/bin/sh\n", true)}},
		{"symlink root", []item{symItem("/", "somewhere")}},
		{"empty directory root", []item{dirItem("/")}},
		{"tree", treeItems()},
		{"odd but valid names", []item{
			dirItem("/"),
			regItem("/\x01", "", false),
			regItem("/-", "", false),
			regItem("/.a", "", false),
			regItem("/"+strings.Repeat("n", 255), "", false),
			regItem("/\xff\xfe", "not utf-8", false),
		}},
		{"longest symlink target", []item{symItem("/", strings.Repeat("t", 4095))}},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := writeGoNix(tt.items)
			if err != nil {
				t.Fatalf("go-nix writer: %v", err)
			}

			got, off, err := readAll(data)
			if err != nil {
				t.Fatalf("our reader: %v", err)
			}

			diffItems(t, got, tt.items)

			if off != int64(len(data)) {
				t.Errorf("Offset = %d, want %d", off, len(data))
			}

			n, err := Validate(bytes.NewReader(data))
			if err != nil || n != int64(len(data)) {
				t.Errorf("Validate = %d, %v; want %d, nil", n, err, len(data))
			}
		})
	}
}

// TestTokenBuilderMatchesGoNix checks the test's token builder against
// go-nix's writer, so that the hand-crafted NARs below are realistic.
func TestTokenBuilderMatchesGoNix(t *testing.T) {
	want, err := writeGoNix([]item{
		dirItem("/"),
		regItem("/e", "x", true),
		dirItem("/sub"),
		regItem("/sub/f", "hello", false),
		symItem("/z", "sub/f"),
	})
	if err != nil {
		t.Fatal(err)
	}

	got := narOf(dir(
		ent("e", exe("x")),
		ent("sub", dir(ent("f", reg("hello")))),
		ent("z", sym("sub/f")),
	))
	if !bytes.Equal(got, want) {
		t.Fatalf("builder output differs from go-nix's writer:\n got %x\nwant %x", got, want)
	}
}

// nest returns node wrapped in n directories named "d".
func nest(n int, node []any) []any {
	for range n {
		node = dir(ent("d", node))
	}

	return node
}

func TestAccepts(t *testing.T) {
	tests := []struct {
		name  string
		data  []byte
		nodes int
	}{
		{"max depth", narOf(nest(256, reg("deep"))), 257},
		{"max name length", narOf(dir(ent(strings.Repeat("n", 255), reg("")))), 2},
		{"dot names that are not . or ..", narOf(dir(ent("...", reg("")), ent("..a", reg("")), ent(".a", reg("")))), 4},
		{"empty directories", narOf(dir(ent("a", dir()), ent("b", dir(ent("c", dir()))))), 4},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			items, off, err := readAll(tt.data)
			if err != nil {
				t.Fatal(err)
			}

			if len(items) != tt.nodes {
				t.Errorf("got %d nodes, want %d", len(items), tt.nodes)
			}

			if off != int64(len(tt.data)) {
				t.Errorf("Offset = %d, want %d", off, len(tt.data))
			}
		})
	}
}

func TestRejects(t *testing.T) {
	longName := strings.Repeat("n", 256)

	tests := []struct {
		name    string
		data    []byte
		wantErr error  // ErrInvalid or io.ErrUnexpectedEOF
		wantMsg string // substring of the error message
	}{
		// Magic and framing.
		{"empty input", nil, io.ErrUnexpectedEOF, "reading magic"},
		{"bad magic", build("nix-archive-2", reg("")), ErrInvalid,
			`nar: invalid archive: bad magic: expected "nix-archive-1", got "nix-archive-2"`},
		{"huge magic token", build(u64(1 << 62)), ErrInvalid, "got a token of 4611686018427387904 bytes"},
		{"missing open paren", build(magic, "type", "regular", "contents", "", ")"), ErrInvalid,
			`nar: invalid archive: /: expected "(", got "type"`},
		{"missing type", build(magic, "(", "regular"), ErrInvalid, `/: expected "type", got "regular"`},
		{"type twice", build(magic, "(", "type", "type", "regular"), ErrInvalid, `/: unknown node type "type"`},
		{"unknown node type", narOf(dir(ent("dev", []any{"(", "type", "fifo", ")"}))), ErrInvalid,
			`/dev: unknown node type "fifo"`},
		{"huge token", narOf(dir(raw(build(u64(1 << 40))))), ErrInvalid,
			`/: expected "entry" or ")", got a token of 1099511627776 bytes`},
		{"non-zero token padding", build(magic, u64(1), raw("(\x00\x00\x00\x00\x00\x00\x01")), ErrInvalid,
			`/: non-zero padding after "("`},

		// Entry names.
		{"name dot dot", narOf(dir(ent("share", dir(ent("..", reg("x")))))), ErrInvalid,
			`nar: invalid archive: /share: entry name ".." not allowed`},
		{"name dot", narOf(dir(ent(".", reg("x")))), ErrInvalid, `/: entry name "." not allowed`},
		{"name empty", narOf(dir(ent("a", dir(ent("", reg("x")))))), ErrInvalid, `/a: entry name "" not allowed`},
		{"name slash", narOf(dir(ent("a/b", reg("x")))), ErrInvalid, `/: entry name "a/b" not allowed`},
		{"name NUL", narOf(dir(ent("a\x00b", reg("x")))), ErrInvalid, `/: entry name "a\x00b" not allowed`},
		{"name too long", narOf(dir(ent("lib", dir(ent(longName, reg("x")))))), ErrInvalid,
			"/lib: entry name too long (256 bytes, limit 255)"},
		{"name non-zero padding", narOf(dir([]any{"entry", "(", "name", u64(1), raw("a\x00\x00\x00\x00\x00\x00\x01")})), ErrInvalid,
			`/: non-zero padding after entry name "a"`},
		{"entry without name", narOf(dir([]any{"entry", "(", "node", reg(""), ")"})), ErrInvalid,
			`/: expected "name", got "node"`},
		{"entry without node", narOf(dir([]any{"entry", "(", "name", "a", reg(""), ")"})), ErrInvalid,
			`/a: expected "node", got "("`},

		// Order.
		{"unsorted", narOf(dir(ent("a", dir(ent("c", reg("")), ent("b", reg("")))))), ErrInvalid,
			`nar: invalid archive: /a: entries not sorted: "b" after "c"`},
		{"duplicate", narOf(dir(ent("x", dir(ent("y", reg("1")), ent("y", reg("2")))))), ErrInvalid,
			`nar: invalid archive: /x: duplicate entry "y"`},
		{"duplicate directory", narOf(dir(ent("x", dir()), ent("x", dir()))), ErrInvalid, `/: duplicate entry "x"`},
		{"unsorted by bytes", narOf(dir(ent("b", reg("")), ent("B", reg("")))), ErrInvalid,
			`/: entries not sorted: "B" after "b"`},

		// Regular files.
		{"executable placeholder not empty", narOf(dir(ent("bin", dir(ent("x",
			[]any{"(", "type", "regular", "executable", "1", "contents", "", ")"}))))), ErrInvalid,
			"/bin/x: executable marker has non-empty value (1 bytes)"},
		{"executable without placeholder", build(magic, "(", "type", "regular", "executable", "contents", "", ")"), ErrInvalid,
			"/: executable marker has non-empty value (8 bytes)"},
		{"executable twice", build(magic, "(", "type", "regular", "executable", "", "executable", "", "contents", "", ")"),
			ErrInvalid, `/: expected "contents", got "executable"`},
		{"regular without contents", build(magic, "(", "type", "regular", ")"), ErrInvalid,
			`/: expected "executable" or "contents", got ")"`},
		{"executable after contents", build(magic, "(", "type", "regular", "contents", "", "executable", "", ")"),
			ErrInvalid, `/: expected ")", got "executable"`},
		{"regular followed by entries", narOf(dir(ent("f",
			[]any{"(", "type", "regular", "contents", "x", ent("g", reg("")), ")"}))), ErrInvalid,
			`/f: expected ")", got "entry"`},
		{"contents non-zero padding", build(magic, "(", "type", "regular", "contents", u64(1), raw("x\x00\x00\x00\x00\x00\x00\x01"), ")"),
			ErrInvalid, "/: non-zero padding after file contents"},
		{"size beyond int64", build(magic, "(", "type", "regular", "contents", u64(1<<63)), ErrInvalid,
			"/: file size 9223372036854775808 too large"},

		// Symlinks.
		{"symlink followed by entries", narOf(dir(ent("l",
			[]any{"(", "type", "symlink", "target", "x", ent("g", reg("")), ")"}))), ErrInvalid,
			`/l: expected ")", got "entry"`},
		{"symlink empty target", narOf(dir(ent("l", sym("")))), ErrInvalid, "/l: empty symlink target"},
		{"symlink NUL target", narOf(dir(ent("l", sym("a\x00b")))), ErrInvalid, `/l: symlink target "a\x00b" contains NUL`},
		{"symlink target too long", narOf(dir(ent("l", sym(strings.Repeat("t", 4096))))), ErrInvalid,
			"/l: symlink target too long (4096 bytes, limit 4095)"},
		{"symlink with contents", build(magic, "(", "type", "symlink", "contents", ""), ErrInvalid,
			`/: expected "target", got "contents"`},
		{"executable symlink", build(magic, "(", "type", "symlink", "executable", ""), ErrInvalid,
			`/: expected "target", got "executable"`},

		// Directories.
		{"directory with contents", build(magic, "(", "type", "directory", "contents", ""), ErrInvalid,
			`/: expected "entry" or ")", got "contents"`},
		{"entry not closed", narOf(dir([]any{"entry", "(", "name", "a", "node", reg("")}, ent("b", reg("")))), ErrInvalid,
			`/a: expected ")", got "entry"`},
		{"directory entry not closed", narOf(dir([]any{"entry", "(", "name", "a", "node", dir()}, ent("b", reg("")))), ErrInvalid,
			`/a: expected ")", got "entry"`},
		{"too deep", narOf(nest(257, reg("deep"))), ErrInvalid, `: entry "d" nested deeper than 256 levels`},

		// Truncation.
		{"truncated after magic", build(magic), io.ErrUnexpectedEOF, "nar: /: unexpected EOF"},
		{"truncated in contents", build(magic, "(", "type", "regular", "contents", u64(5), raw("abc")), io.ErrUnexpectedEOF,
			"nar: /: unexpected EOF"},
		{"truncated in padding", build(magic, "(", "type", "regular", "contents", u64(5), raw("abcde\x00")), io.ErrUnexpectedEOF,
			"nar: /: unexpected EOF"},
		{"truncated in name", build(magic, "(", "type", "directory", "entry", "(", "name", "share", "node",
			"(", "type", "directory", "entry", "(", "name", u64(4), raw("ab")),
			io.ErrUnexpectedEOF, "nar: /share: unexpected EOF"},
		{"root never closed", build(magic, "(", "type", "directory", ent("a", reg(""))), io.ErrUnexpectedEOF,
			"nar: /: unexpected EOF"},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := readAll(tt.data)
			checkErr(t, "readAll", err, tt.wantErr, tt.wantMsg)

			_, err = Validate(bytes.NewReader(tt.data))
			checkErr(t, "Validate", err, tt.wantErr, tt.wantMsg)
		})
	}
}

func checkErr(t *testing.T, what string, err, wantErr error, wantMsg string) {
	t.Helper()

	if err == nil {
		t.Fatalf("%s: no error, want %v", what, wantErr)
	}

	if !errors.Is(err, wantErr) {
		t.Errorf("%s: error %q does not wrap %q", what, err, wantErr)
	}

	// Truncation is not reported as a format violation, and vice versa.
	if wantErr == io.ErrUnexpectedEOF && errors.Is(err, ErrInvalid) {
		t.Errorf("%s: truncation error %q wraps ErrInvalid", what, err)
	}

	if !strings.Contains(err.Error(), wantMsg) {
		t.Errorf("%s: error %q does not contain %q", what, err, wantMsg)
	}
}

// TestEveryTruncation cuts a valid NAR at every length: each prefix must be
// reported as truncated, never as valid or as a format violation.
func TestEveryTruncation(t *testing.T) {
	items := treeItems()
	items[len(items)-1].Content = "short" // keep the test fast
	items[len(items)-1].Size = 5

	data, err := writeGoNix(items)
	if err != nil {
		t.Fatal(err)
	}

	for n := range len(data) {
		_, err := Validate(bytes.NewReader(data[:n]))
		if !errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrInvalid) {
			t.Fatalf("prefix of %d/%d bytes: error %v, want io.ErrUnexpectedEOF", n, len(data), err)
		}

		_, _, err = readAll(data[:n])
		if !errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrInvalid) {
			t.Fatalf("prefix of %d/%d bytes: readAll error %v, want io.ErrUnexpectedEOF", n, len(data), err)
		}
	}
}

// TestHugeClaimedSize: a file claiming 10 GB with a 10-byte body must fail
// quickly with io.ErrUnexpectedEOF, without allocating anything near the
// claimed size, both when skipped and when read.
func TestHugeClaimedSize(t *testing.T) {
	data := build(magic, "(", "type", "directory", "entry", "(", "name", "big", "node",
		"(", "type", "regular", "contents", u64(10<<30), raw("0123456789"))

	var before, after runtime.MemStats

	runtime.ReadMemStats(&before)
	start := time.Now()

	_, err := Validate(bytes.NewReader(data))
	checkErr(t, "Validate", err, io.ErrUnexpectedEOF, "nar: /big: unexpected EOF")

	nr := NewReader(bytes.NewReader(data))
	if _, err := nr.Next(); err != nil {
		t.Fatal(err)
	}

	hdr, err := nr.Next()
	if err != nil {
		t.Fatal(err)
	}

	if hdr.Size != 10<<30 {
		t.Errorf("Size = %d, want %d", hdr.Size, int64(10<<30))
	}

	c, err := io.ReadAll(nr)
	checkErr(t, "ReadAll", err, io.ErrUnexpectedEOF, "nar: /big: unexpected EOF")

	if string(c) != "0123456789" {
		t.Errorf("read %q before the error", c)
	}

	// The error is sticky.
	if _, err2 := nr.Next(); err2 != err {
		t.Errorf("Next after error = %v, want %v", err2, err)
	}

	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("took %v", elapsed)
	}

	runtime.ReadMemStats(&after)

	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Errorf("allocated %d bytes", alloc)
	}
}

func TestSkipUnreadContent(t *testing.T) {
	items := treeItems()

	data, err := writeGoNix(items)
	if err != nil {
		t.Fatal(err)
	}

	// Read nothing, or only the first 3 bytes, of every file.
	for _, partial := range []int{0, 3} {
		nr := NewReader(bytes.NewReader(data))

		for i := 0; ; i++ {
			hdr, err := nr.Next()
			if err == io.EOF {
				if i != len(items) {
					t.Errorf("partial=%d: %d nodes, want %d", partial, i, len(items))
				}

				break
			}

			if err != nil {
				t.Fatalf("partial=%d: %v", partial, err)
			}

			if *hdr != items[i].Header {
				t.Fatalf("partial=%d: node %d = %+v, want %+v", partial, i, *hdr, items[i].Header)
			}

			if partial > 0 {
				buf := make([]byte, partial)
				n, _ := io.ReadFull(nr, buf)

				if want := items[i].Content[:min(partial, len(items[i].Content))]; string(buf[:n]) != want {
					t.Fatalf("partial=%d: %s starts with %q, want %q", partial, hdr.Path, buf[:n], want)
				}
			}
		}

		if nr.Offset() != int64(len(data)) {
			t.Errorf("partial=%d: Offset = %d, want %d", partial, nr.Offset(), len(data))
		}
	}
}

// failingReader fails the test if it is read at all.
type failingReader struct{ t *testing.T }

func (f failingReader) Read([]byte) (int, error) {
	f.t.Error("read past the end of the NAR")

	return 0, errors.New("read past the end")
}

func TestNoReadPastEnd(t *testing.T) {
	for _, items := range [][]item{
		treeItems(),
		{regItem("/", "root file", false)},
		{symItem("/", "target")},
		{dirItem("/")},
	} {
		data, err := writeGoNix(items)
		if err != nil {
			t.Fatal(err)
		}

		junk := []byte("trailing junk that is not ours")
		br := bytes.NewReader(append(append([]byte(nil), data...), junk...))

		n, err := Validate(br)
		if err != nil || n != int64(len(data)) {
			t.Fatalf("Validate = %d, %v; want %d, nil", n, err, len(data))
		}

		if br.Len() != len(junk) {
			t.Errorf("%d bytes left unread, want %d", br.Len(), len(junk))
		}

		// Also through Next, with a reader that fails when read past the end.
		nr := NewReader(io.MultiReader(bytes.NewReader(data), failingReader{t}))

		for {
			_, err := nr.Next()
			if err == io.EOF {
				break
			}

			if err != nil {
				t.Fatal(err)
			}
		}

		// Further calls stay at EOF without reading.
		if _, err := nr.Next(); err != io.EOF {
			t.Errorf("second Next after the end = %v, want io.EOF", err)
		}

		if n, err := nr.Read(make([]byte, 8)); n != 0 || err != io.EOF {
			t.Errorf("Read after the end = %d, %v; want 0, io.EOF", n, err)
		}

		if nr.Offset() != int64(len(data)) {
			t.Errorf("Offset = %d, want %d", nr.Offset(), len(data))
		}
	}
}

func TestReadOnNonFiles(t *testing.T) {
	data := narOf(dir(ent("l", sym("t"))))
	nr := NewReader(bytes.NewReader(data))

	if n, err := nr.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Errorf("Read before Next = %d, %v", n, err)
	}

	for range 2 {
		if _, err := nr.Next(); err != nil {
			t.Fatal(err)
		}

		if n, err := nr.Read(make([]byte, 8)); n != 0 || err != io.EOF {
			t.Errorf("Read = %d, %v", n, err)
		}
	}

	if _, err := nr.Next(); err != io.EOF {
		t.Errorf("Next = %v, want io.EOF", err)
	}
}

// errReader returns data, then err.
type errReader struct {
	data []byte
	err  error
}

func (e *errReader) Read(p []byte) (int, error) {
	if len(e.data) == 0 {
		return 0, e.err
	}

	n := copy(p, e.data)
	e.data = e.data[n:]

	return n, nil
}

func TestUnderlyingErrorIsWrapped(t *testing.T) {
	boom := errors.New("boom")
	data := narOf(dir(ent("a", reg("content"))))

	_, err := Validate(&errReader{data: data[:len(data)-20], err: boom})
	if !errors.Is(err, boom) || errors.Is(err, ErrInvalid) || errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("error %v, want one wrapping only %v", err, boom)
	}

	if !strings.Contains(err.Error(), "/a") {
		t.Errorf("error %q does not name the path", err)
	}
}

func TestLimits(t *testing.T) {
	data := narOf(dir(ent("abcd", sym("12345678")), ent("d", nest(3, reg("")))))

	tests := []struct {
		limits  Limits
		wantMsg string
	}{
		{Limits{}, ""},
		{Limits{MaxNameLen: 3}, "/: entry name too long (4 bytes, limit 3)"},
		{Limits{MaxTargetLen: 7}, "/abcd: symlink target too long (8 bytes, limit 7)"},
		{Limits{MaxDepth: 4}, ""},
		{Limits{MaxDepth: 3}, `/d/d/d: entry "d" nested deeper than 3 levels`},
	}

	for _, tt := range tests {
		nr := NewReaderWithLimits(bytes.NewReader(data), tt.limits)

		var err error
		for err == nil {
			_, err = nr.Next()
		}

		if tt.wantMsg == "" {
			if err != io.EOF {
				t.Errorf("%+v: %v", tt.limits, err)
			}

			continue
		}

		checkErr(t, "Next", err, ErrInvalid, tt.wantMsg)
	}
}
