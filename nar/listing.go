package nar

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// MaxListingSize bounds a NAR listing (`<hash>.ls`) nixoci reads or
// writes: about 100 bytes a file, so some 600,000 files.
const MaxListingSize = 64 << 20

// ErrInvalidListing: a NAR listing does not parse as Nix's listing format.
var ErrInvalidListing = errors.New("nar: invalid listing")

// ErrListingTooLarge: a listing would exceed MaxListingSize.
var ErrListingTooLarge = errors.New("nar: listing too large")

// WriteListing reads the NAR r and writes its listing to w, the JSON
// document `nix copy --to 'file://…?write-nar-listing=true'` writes for it
// (listNar in Nix 2.8's src/libstore/fs-accessor.cc and nar-accessor.cc):
//
//	{"version":1,"root":NODE}
//
// where NODE is {"type":"directory","entries":{NAME:NODE,…}} (names in
// NAR order, which is sorted), {"type":"regular","size":N,
// ["executable":true,]"narOffset":OFFSET} (OFFSET: where the contents
// start in the NAR) or {"type":"symlink","target":TARGET}, strings
// escaped as Nix's JSON writer does. Later Nix versions write the same
// document with keys sorted; JSON readers see no difference. It returns
// the NAR's size. Nothing larger than MaxListingSize is written.
func WriteListing(w io.Writer, r io.Reader) (int64, error) {
	nr := NewReader(bufio.NewReaderSize(r, 64<<10))
	lw := &limitedWriter{w: w, n: MaxListingSize}
	bw := bufio.NewWriterSize(lw, 64<<10)
	bw.WriteString(`{"version":1,"root":`)
	// open[i] says whether the directory at depth i has had an entry.
	var open []bool
	closeTo := func(depth int) {
		for len(open) > depth {
			bw.WriteString("}}")
			open = open[:len(open)-1]
		}
	}
	for {
		hdr, err := nr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nr.Offset(), err
		}
		depth := 0
		name := ""
		if hdr.Path != "/" {
			parts := strings.Split(hdr.Path[1:], "/")
			depth = len(parts)
			name = parts[depth-1]
		}
		closeTo(depth)
		if depth > 0 {
			if open[depth-1] {
				bw.WriteByte(',')
			}
			open[depth-1] = true
			writeJSONString(bw, name)
			bw.WriteByte(':')
		}
		switch hdr.Type {
		case TypeDirectory:
			bw.WriteString(`{"type":"directory","entries":{`)
			open = append(open, false)
		case TypeRegular:
			bw.WriteString(`{"type":"regular","size":`)
			bw.WriteString(strconv.FormatInt(hdr.Size, 10))
			if hdr.Executable {
				bw.WriteString(`,"executable":true`)
			}
			bw.WriteString(`,"narOffset":`)
			bw.WriteString(strconv.FormatInt(nr.Offset(), 10))
			bw.WriteByte('}')
		case TypeSymlink:
			bw.WriteString(`{"type":"symlink","target":`)
			writeJSONString(bw, hdr.LinkTarget)
			bw.WriteByte('}')
		}
		if lw.err != nil {
			return nr.Offset(), lw.err
		}
	}
	closeTo(0)
	bw.WriteString("}")
	if err := bw.Flush(); err != nil {
		return nr.Offset(), err
	}
	return nr.Offset(), nil
}

type limitedWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	if int64(len(p)) > l.n {
		l.err = fmt.Errorf("%w: more than %d bytes", ErrListingTooLarge, MaxListingSize)
		return 0, l.err
	}
	l.n -= int64(len(p))
	n, err := l.w.Write(p)
	if err != nil {
		l.err = err
	}
	return n, err
}

// writeJSONString escapes as Nix 2.8's JSON writer (src/libutil/json.cc):
// '"' and '\\' with a backslash, \n \r \t, other bytes below 0x20 as
// \u00XX, every other byte as is.
func writeJSONString(w *bufio.Writer, s string) {
	w.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\\':
			w.WriteByte('\\')
			w.WriteByte(c)
		case '\n':
			w.WriteString(`\n`)
		case '\r':
			w.WriteString(`\r`)
		case '\t':
			w.WriteString(`\t`)
		default:
			if c < 0x20 {
				fmt.Fprintf(w, `\u%04x`, c)
			} else {
				w.WriteByte(c)
			}
		}
	}
	w.WriteByte('"')
}

// ValidateListing checks that data is a NAR listing as Nix writes it:
// one JSON object with "version" 1 and a "root" node, each node a
// directory (entries named as NAR entries may be: not empty, ".", ".." or
// holding '/' or NUL, no name twice), a regular file (a size, optionally
// "executable" and "narOffset") or a symlink (a target), nested at most
// DefaultLimits.MaxDepth deep. It reads data with a streaming decoder,
// never building the tree.
func ValidateListing(data []byte) error {
	if len(data) > MaxListingSize {
		return fmt.Errorf("%w: %d bytes", ErrListingTooLarge, len(data))
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	v := listingValidator{d: d}
	if err := v.object(func(key string) error {
		switch key {
		case "version":
			var n json.Number
			if err := d.Decode(&n); err != nil || n.String() != "1" {
				return v.bad("version is not 1")
			}
			v.version = true
		case "root":
			v.root = true
			return v.node("/", 0)
		default:
			return v.skip()
		}
		return nil
	}); err != nil {
		return err
	}
	if !v.version || !v.root {
		return v.bad(`no "version": 1 or no "root"`)
	}
	if _, err := d.Token(); err != io.EOF {
		return v.bad("data after the listing")
	}
	return nil
}

type listingValidator struct {
	d             *json.Decoder
	version, root bool
}

func (v *listingValidator) bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidListing, fmt.Sprintf(format, args...))
}

// object reads one JSON object, calling field for each key (which must
// consume the value); duplicate keys are refused.
func (v *listingValidator) object(field func(key string) error) error {
	tok, err := v.d.Token()
	if err != nil {
		return v.bad("%v", err)
	}
	if tok != json.Delim('{') {
		return v.bad("expected an object, got %v", tok)
	}
	seen := map[string]bool{}
	for v.d.More() {
		tok, err := v.d.Token()
		if err != nil {
			return v.bad("%v", err)
		}
		key := tok.(string)
		if seen[key] {
			return v.bad("key %q twice", key)
		}
		seen[key] = true
		if err := field(key); err != nil {
			return err
		}
	}
	if _, err := v.d.Token(); err != nil {
		return v.bad("%v", err)
	}
	return nil
}

// skip consumes one value of any kind (keys Nix may add later).
func (v *listingValidator) skip() error {
	var raw json.RawMessage
	if err := v.d.Decode(&raw); err != nil {
		return v.bad("%v", err)
	}
	return nil
}

func (v *listingValidator) node(path string, depth int) error {
	if depth > DefaultLimits.MaxDepth {
		return v.bad("%s: nested deeper than %d", path, DefaultLimits.MaxDepth)
	}
	var typ string
	var size, entries, target bool
	err := v.object(func(key string) error {
		switch key {
		case "type":
			if err := v.d.Decode(&typ); err != nil {
				return v.bad("%s: type is not a string", path)
			}
		case "size", "narOffset":
			var n json.Number
			if err := v.d.Decode(&n); err != nil {
				return v.bad("%s: %s is not a number", path, key)
			}
			if i, err := strconv.ParseInt(n.String(), 10, 64); err != nil || i < 0 {
				return v.bad("%s: %s %s is not a non-negative integer", path, key, n)
			}
			size = size || key == "size"
		case "executable":
			var b bool
			if err := v.d.Decode(&b); err != nil {
				return v.bad("%s: executable is not a boolean", path)
			}
		case "target":
			var s string
			if err := v.d.Decode(&s); err != nil || s == "" || len(s) > DefaultLimits.MaxTargetLen || strings.IndexByte(s, 0) >= 0 {
				return v.bad("%s: target is not a symlink target", path)
			}
			target = true
		case "entries":
			entries = true
			return v.object(func(name string) error {
				if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > DefaultLimits.MaxNameLen {
					return v.bad("%s: entry name %q not allowed", path, name)
				}
				return v.node(strings.TrimSuffix(path, "/")+"/"+name, depth+1)
			})
		default:
			return v.skip()
		}
		return nil
	})
	if err != nil {
		return err
	}
	switch {
	case typ == "regular" && size, typ == "symlink" && target, typ == "directory":
		if entries && typ != "directory" {
			return v.bad("%s: a %s with entries", path, typ)
		}
		return nil
	}
	return v.bad("%s: type %q without what it needs (size, target)", path, typ)
}
