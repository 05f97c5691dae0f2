package countio_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nixoci/nixoci/internal/countio"
)

func TestReaderCountsConcurrently(t *testing.T) {
	var total atomic.Int64
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := countio.Reader{R: strings.NewReader(strings.Repeat("x", 1000*(i+1))), N: &total}
			if _, err := io.Copy(io.Discard, r); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got, want := total.Load(), int64(1000*(1+2+3+4+5+6+7+8)); got != want {
		t.Errorf("counted %d bytes, want %d", got, want)
	}
}

func TestReaderSeeks(t *testing.T) {
	var n atomic.Int64
	r := countio.Reader{R: strings.NewReader("hello"), N: &n}
	io.Copy(io.Discard, r)
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(r)
	if string(data) != "hello" || n.Load() != 10 {
		t.Errorf("after rewinding read %q, counted %d; want %q and 10 (re-reads count)", data, n.Load(), "hello")
	}
	unseekable := countio.Reader{R: io.MultiReader(strings.NewReader("x"))}
	if _, err := unseekable.Seek(0, io.SeekStart); !errors.Is(err, countio.ErrCannotSeek) {
		t.Errorf("Seek on a reader that cannot seek: %v, want ErrCannotSeek", err)
	}
}

func TestWriterCounts(t *testing.T) {
	var n atomic.Int64
	var b bytes.Buffer
	w := countio.Writer{W: &b, N: &n}
	io.WriteString(w, "abc")
	io.WriteString(w, "de")
	if b.String() != "abcde" || n.Load() != 5 {
		t.Errorf("wrote %q, counted %d; want %q, 5", b.String(), n.Load(), "abcde")
	}
	countio.Writer{W: &b}.Write([]byte("f")) // nil N counts nothing
}
