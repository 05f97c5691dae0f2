package testenv

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
)

// sampleWords are what SampleData is mostly made of.
var sampleWords = []string{"nix", "store", "closure", "oci", "layer", "manifest", "\x00\x01", "/nix/store/", "-glibc-2.40/lib/"}

// SampleData returns n bytes that compress well but not trivially: words
// from a small vocabulary with random bytes mixed in (one in eight), drawn
// from ChaCha8 seeded with seed. ChaCha8's stream is specified (C2SP
// chacha8rand) and the choices are made here from its raw output, so the
// bytes are the same with every Go version: golden digests of compressed
// output can rest on them.
func SampleData(n int, seed uint64) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	r := rand.NewChaCha8(key)
	var b bytes.Buffer
	b.Grow(n + 32)
	for b.Len() < n {
		x := r.Uint64()
		if x%8 == 0 {
			b.WriteByte(byte(x >> 8))
		} else {
			b.WriteString(sampleWords[(x>>8)%uint64(len(sampleWords))])
		}
	}
	return b.Bytes()[:n]
}
