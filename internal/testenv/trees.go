package testenv

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TreesEqual fails the test unless the file trees rooted at want and got are
// identical as a NAR sees them: same names, same types, same file contents,
// same executable bits and same symlink targets. Symlinks are compared, never
// followed. The message names the first difference.
func TreesEqual(t testing.TB, want, got string) {
	t.Helper()
	if err := DiffTrees(want, got); err != nil {
		t.Fatalf("file trees differ (want %s, got %s): %v", want, got, err)
	}
}

// DiffTrees compares the file trees rooted at want and got like TreesEqual
// and returns nil if they are identical, or an error naming the first
// difference (by path relative to the roots), in lexical walk order.
// Permission bits other than "executable" (any x bit) are not compared,
// nor are owners or times, since a NAR does not record them.
func DiffTrees(want, got string) error {
	return diffNode(want, got, ".")
}

func diffNode(wantRoot, gotRoot, rel string) error {
	wp, gp := filepath.Join(wantRoot, rel), filepath.Join(gotRoot, rel)
	wi, err := os.Lstat(wp)
	if err != nil {
		return fmt.Errorf("%s: want side: %w", rel, err)
	}
	gi, err := os.Lstat(gp)
	if err != nil {
		return fmt.Errorf("%s: got side: %w", rel, err)
	}
	wt, gt := nodeType(wi.Mode()), nodeType(gi.Mode())
	if wt != gt {
		return fmt.Errorf("%s: type differs: want %s, got %s", rel, wt, gt)
	}
	switch wt {
	case "symlink":
		wl, err := os.Readlink(wp)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		gl, err := os.Readlink(gp)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if wl != gl {
			return fmt.Errorf("%s: symlink target differs: want %q, got %q", rel, wl, gl)
		}
		return nil
	case "regular file":
		wx, gx := wi.Mode().Perm()&0o111 != 0, gi.Mode().Perm()&0o111 != 0
		if wx != gx {
			return fmt.Errorf("%s: executable bit differs: want executable=%t (mode %v), got executable=%t (mode %v)", rel, wx, wi.Mode().Perm(), gx, gi.Mode().Perm())
		}
		return diffContents(wp, gp, rel, wi.Size(), gi.Size())
	case "directory":
		wn, err := dirNames(wp)
		if err != nil {
			return fmt.Errorf("%s: want side: %w", rel, err)
		}
		gn, err := dirNames(gp)
		if err != nil {
			return fmt.Errorf("%s: got side: %w", rel, err)
		}
		i, j := 0, 0
		for i < len(wn) || j < len(gn) {
			switch {
			case j == len(gn) || i < len(wn) && wn[i] < gn[j]:
				return fmt.Errorf("%s: missing on got side", filepath.Join(rel, wn[i]))
			case i == len(wn) || gn[j] < wn[i]:
				return fmt.Errorf("%s: unexpected on got side (absent on want side)", filepath.Join(rel, gn[j]))
			}
			if err := diffNode(wantRoot, gotRoot, filepath.Join(rel, wn[i])); err != nil {
				return err
			}
			i++
			j++
		}
		return nil
	default:
		return fmt.Errorf("%s: unsupported file type %s (mode %v)", rel, wt, wi.Mode())
	}
}

func nodeType(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "regular file"
	case m.IsDir():
		return "directory"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	default:
		return "special file (" + m.Type().String() + ")"
	}
}

func dirNames(p string) ([]string, error) {
	ents, err := os.ReadDir(p)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	slices.Sort(names)
	return names, nil
}

func diffContents(wp, gp, rel string, wsize, gsize int64) error {
	wf, err := os.Open(wp)
	if err != nil {
		return fmt.Errorf("%s: want side: %w", rel, err)
	}
	defer wf.Close()
	gf, err := os.Open(gp)
	if err != nil {
		return fmt.Errorf("%s: got side: %w", rel, err)
	}
	defer gf.Close()
	const chunk = 64 << 10
	wb, gb := make([]byte, chunk), make([]byte, chunk)
	var off int64
	for {
		wn, werr := io.ReadFull(wf, wb)
		gn, gerr := io.ReadFull(gf, gb)
		if werr != nil && werr != io.EOF && werr != io.ErrUnexpectedEOF {
			return fmt.Errorf("%s: want side: %w", rel, werr)
		}
		if gerr != nil && gerr != io.EOF && gerr != io.ErrUnexpectedEOF {
			return fmt.Errorf("%s: got side: %w", rel, gerr)
		}
		n := min(wn, gn)
		if !bytes.Equal(wb[:n], gb[:n]) {
			i := 0
			for wb[i] == gb[i] {
				i++
			}
			return fmt.Errorf("%s: contents differ at byte %d (want 0x%02x, got 0x%02x; sizes want %d, got %d)", rel, off+int64(i), wb[i], gb[i], wsize, gsize)
		}
		if wn != gn {
			return fmt.Errorf("%s: contents differ in length: want %d bytes, got %d bytes (identical for the first %d)", rel, off+int64(wn)+remaining(wf), off+int64(gn)+remaining(gf), off+int64(n))
		}
		if wn < chunk {
			return nil
		}
		off += int64(wn)
	}
}

// remaining counts the bytes left to read in f (for a length message).
func remaining(f *os.File) int64 {
	n, _ := io.Copy(io.Discard, f)
	return n
}

// ReadTree returns every regular file below dir, by slash-separated
// path relative to dir.
func ReadTree(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		files[filepath.ToSlash(rel)] = data
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
