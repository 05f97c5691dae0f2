package nar

import (
	"fmt"
	"io"

	"github.com/nixoci/nixoci/codec"
	"github.com/nixoci/nixoci/spec"
)

// ValidateCompressed decompresses r, reads the NAR in it strictly (as
// Validate) while copying the NAR bytes to h (a hash, typically), and
// checks that nothing follows the NAR, so that a file is accepted only if
// it is exactly one NAR. It returns the NAR's size.
func ValidateCompressed(r io.Reader, c spec.Compression, h io.Writer) (int64, error) {
	return ValidateCompressedSize(r, c, 0, h)
}

// ValidateCompressedSize is ValidateCompressed for a NAR known to be at
// most size bytes (size > 0; its NarSize): the decoder holds no larger
// dictionary or window than that needs (codec.NewReaderSize).
func ValidateCompressedSize(r io.Reader, c spec.Compression, size int64, h io.Writer) (int64, error) {
	dec, err := codec.NewReaderSize(r, c, size)
	if err != nil {
		return 0, err
	}
	defer dec.Close()
	n, err := Validate(io.TeeReader(dec, h))
	if err != nil {
		return n, err
	}
	var extra [1]byte
	switch k, err := io.ReadFull(dec, extra[:]); {
	case k > 0:
		return n, fmt.Errorf("%w: data after the end of the NAR", ErrInvalid)
	case err != io.EOF:
		return n, fmt.Errorf("after the NAR: %w", err)
	}
	return n, nil
}
