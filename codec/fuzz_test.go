package codec

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/nixoci/nixoci/spec"
)

// FuzzDecode: decoding arbitrary input as xz or zstd never panics, never
// hangs, and refuses what declares more memory than the bound (a lower
// one here, so that each input decodes quickly): what the decoders
// allocate is bounded by the stream header, checked first.
func FuzzDecode(f *testing.F) {
	for i, c := range []spec.Compression{spec.CompressionXz, spec.CompressionZstd} {
		for _, n := range []int{0, 1, 5000} {
			var b bytes.Buffer
			w, err := NewWriter(&b, c)
			if err != nil {
				f.Fatal(err)
			}
			w.Write(sample(n, uint64(n)))
			w.Close()
			f.Add(byte(i), b.Bytes())
		}
	}
	f.Fuzz(func(t *testing.T, which byte, data []byte) {
		c := spec.CompressionXz
		if which&1 == 1 {
			c = spec.CompressionZstd
		}
		r, err := newReader(bytes.NewReader(data), c, 1<<20)
		if err != nil {
			return
		}
		defer r.Close()
		// The output is bounded too: a small input may expand a lot.
		n, err := io.Copy(io.Discard, io.LimitReader(r, 4<<20))
		if err == nil && n == 4<<20 {
			return
		}
		if c == spec.CompressionXz && errors.Is(err, ErrDictTooLarge) && len(data) < 12 {
			t.Errorf("dictionary refused before a stream header was read: %v", err)
		}
		// With the content's size known, the structure walkers that fit
		// the dictionary or window never panic or hang either.
		fr, err := NewReaderSize(bytes.NewReader(data), c, 1+int64(which)<<10)
		if err != nil {
			return
		}
		defer fr.Close()
		io.Copy(io.Discard, io.LimitReader(fr, 4<<20))
	})
}
