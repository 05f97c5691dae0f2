package testenv

import (
	"bytes"
	"testing"
)

// TestSampleData: exact lengths, the same bytes for a seed, other bytes
// for another seed, and mostly words (so it compresses). That the bytes
// stay the same across Go versions is pinned by codec's golden test.
func TestSampleData(t *testing.T) {
	for _, n := range []int{0, 1, 17, 4096, 1<<20 + 3} {
		a, b := SampleData(n, 1), SampleData(n, 1)
		if len(a) != n || !bytes.Equal(a, b) {
			t.Errorf("SampleData(%d, 1): %d bytes, equal to a second call: %v", n, len(a), bytes.Equal(a, b))
		}
	}
	a, b := SampleData(4096, 1), SampleData(4096, 2)
	if bytes.Equal(a, b) {
		t.Error("seeds 1 and 2 give the same bytes")
	}
	if n := bytes.Count(a, []byte("store")); n < 20 {
		t.Errorf("4 KiB of SampleData holds the word store %d times; want it mostly made of words", n)
	}
}
