package serving

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
)

// TestStatusOf: backend failures are 5xx by kind, never 404.
func TestStatusOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{context.DeadlineExceeded, http.StatusGatewayTimeout},
		{fmt.Errorf("b: %w", context.DeadlineExceeded), http.StatusGatewayTimeout},
		{fmt.Errorf("b: %w: refused", backend.ErrUnreachable), http.StatusServiceUnavailable},
		{errors.Join(fmt.Errorf("a: %w", backend.ErrUnreachable), errors.New("b: other")), http.StatusServiceUnavailable},
		{fmt.Errorf("tag: %w", artifact.ErrNotArtifact), http.StatusBadGateway},
		{fmt.Errorf("m: %w", artifact.ErrHashMismatch), http.StatusBadGateway},
		{fmt.Errorf("b: %w", backend.ErrRegistry), http.StatusBadGateway},
		{fmt.Errorf("b: %w", backend.ErrUnauthorized), http.StatusBadGateway},
		{errors.New("anything"), http.StatusBadGateway},
		{fmt.Errorf("odd: %w", errdef.ErrNotFound), http.StatusBadGateway},
	} {
		if got := StatusOf(tc.err); got != tc.want {
			t.Errorf("StatusOf(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

// TestVerifier: a whole, in-order read is checked against the digest; a
// mismatch withholds the last read.
func TestVerifier(t *testing.T) {
	data := bytes.Repeat([]byte("verifier "), 5000)
	d := digest.FromBytes(data)
	bad := bytes.Clone(data)
	bad[100] ^= 1
	newV := func(content []byte) *blobReader {
		r := bytes.NewReader(content)
		return newBlobReader(r, nil, ocispec.Descriptor{Digest: d, Size: int64(len(data))})
	}

	v := newV(data)
	got, err := io.ReadAll(v)
	if err != nil || !bytes.Equal(got, data) || v.corrupt != nil {
		t.Errorf("good content: %d bytes, %v, corrupt %v", len(got), err, v.corrupt != nil)
	}

	v = newV(bad)
	got, err = io.ReadAll(v)
	if !errors.Is(err, ErrCorrupt) || v.corrupt == nil || len(got) >= len(bad) {
		t.Errorf("bad content: %d of %d bytes, %v, corrupt %v", len(got), len(bad), err, v.corrupt != nil)
	}
	if err != nil && !strings.Contains(err.Error(), d.String()) {
		t.Errorf("error does not name the digest: %v", err)
	}

	// ServeContent's size probe (end, then start) keeps verification on.
	v = newV(bad)
	if n, err := v.Seek(0, io.SeekEnd); err != nil || n != int64(len(bad)) {
		t.Fatal(n, err)
	}
	if _, err := v.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(v); !errors.Is(err, ErrCorrupt) {
		t.Errorf("after the size probe: %v", err)
	}

	// A read from elsewhere is not verified (a Range request).
	v = newV(bad)
	if _, err := v.Seek(10, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(v); err != nil || len(got) != len(bad)-10 || v.corrupt != nil {
		t.Errorf("ranged read: %d bytes, %v, corrupt %v", len(got), err, v.corrupt != nil)
	}

	// A partial read followed by a rewind verifies from scratch.
	v = newV(data)
	io.ReadFull(v, make([]byte, 1000))
	v.Seek(0, io.SeekStart)
	if _, err := io.ReadAll(v); err != nil || v.corrupt != nil {
		t.Errorf("re-read after rewind: %v, corrupt %v", err, v.corrupt != nil)
	}
}
