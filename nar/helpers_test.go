package nar

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	gonar "github.com/nix-community/go-nix/pkg/nar"
	"github.com/nix-community/go-nix/pkg/wire"
)

// A tiny token-level NAR builder, able to emit arbitrary (also invalid)
// token sequences. build flattens its arguments:
//
//	string   one wire string (length, bytes, zero padding)
//	u64      a bare uint64 (e.g. a length not followed by its body)
//	raw      bytes written as they are
//	[]any    recursively
type (
	u64 uint64
	raw []byte
)

func build(items ...any) []byte {
	var b bytes.Buffer
	buildInto(&b, items)

	return b.Bytes()
}

func buildInto(b *bytes.Buffer, items []any) {
	for _, it := range items {
		switch v := it.(type) {
		case string:
			_ = wire.WriteString(b, v)
		case u64:
			_ = wire.WriteUint64(b, uint64(v))
		case raw:
			b.Write(v)
		case []any:
			buildInto(b, v)
		default:
			panic(fmt.Sprintf("build: unsupported item %T", it))
		}
	}
}

// Node builders, returning token lists for build.
func narOf(node []any) []byte { return build(magic, node) }

func reg(contents string) []any {
	return []any{"(", "type", "regular", "contents", contents, ")"}
}

func exe(contents string) []any {
	return []any{"(", "type", "regular", "executable", "", "contents", contents, ")"}
}

func sym(target string) []any {
	return []any{"(", "type", "symlink", "target", target, ")"}
}

func dir(entries ...any) []any {
	out := []any{"(", "type", "directory"}
	out = append(out, entries...)

	return append(out, ")")
}

func ent(name string, node []any) []any {
	return []any{"entry", "(", "name", name, "node", node, ")"}
}

// item is one node of an archive: its header and, for regular files, its
// content.
type item struct {
	Header
	Content string
}

func (it item) String() string {
	return fmt.Sprintf("%+v content=%q", it.Header, it.Content)
}

// readAll reads a whole NAR with our Reader, returning every node.
func readAll(data []byte) ([]item, int64, error) {
	nr := NewReader(bytes.NewReader(data))

	var items []item

	for {
		hdr, err := nr.Next()
		if err == io.EOF {
			return items, nr.Offset(), nil
		}

		if err != nil {
			return items, nr.Offset(), err
		}

		c, err := io.ReadAll(nr)
		if err != nil {
			return items, nr.Offset(), err
		}

		if hdr.Type != TypeRegular && len(c) != 0 {
			return items, nr.Offset(), fmt.Errorf("%s: %d bytes of content for a %s", hdr.Path, len(c), hdr.Type)
		}

		if int64(len(c)) != hdr.Size {
			return items, nr.Offset(), fmt.Errorf("%s: read %d bytes, header says %d", hdr.Path, len(c), hdr.Size)
		}

		items = append(items, item{Header: *hdr, Content: string(c)})
	}
}

// writeGoNix serialises items with go-nix's nar.Writer.
func writeGoNix(items []item) ([]byte, error) {
	var b bytes.Buffer

	nw, err := gonar.NewWriter(&b)
	if err != nil {
		return nil, err
	}

	for _, it := range items {
		h := it.Header
		if err := nw.WriteHeader(&h); err != nil {
			_ = nw.Close()

			return nil, fmt.Errorf("%s: %w", h.Path, err)
		}

		if _, err := io.WriteString(nw, it.Content); err != nil {
			_ = nw.Close()

			return nil, fmt.Errorf("%s: %w", h.Path, err)
		}
	}

	if err := nw.Close(); err != nil {
		return nil, err
	}

	return b.Bytes(), nil
}

func diffItems(t *testing.T, got, want []item) {
	t.Helper()

	for i := 0; i < len(got) || i < len(want); i++ {
		switch {
		case i >= len(got):
			t.Errorf("missing node %d: %v", i, want[i])
		case i >= len(want):
			t.Errorf("extra node %d: %v", i, got[i])
		case got[i] != want[i]:
			t.Errorf("node %d:\n got %v\nwant %v", i, got[i], want[i])
		}
	}
}
