package backend_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/backend"
)

func TestReadAllAndVerifyReader(t *testing.T) {
	data := []byte(`{"schemaVersion":2}`)
	good := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
	for _, tc := range []struct {
		name     string
		content  []byte
		desc     ocispec.Descriptor
		limit    int64
		mismatch bool
	}{
		{"good", data, good, 1 << 20, false},
		{"short", data[:len(data)-1], good, 1 << 20, true},
		{"long", append(append([]byte{}, data...), ' '), good, 1 << 20, true},
		{"other bytes", bytes.ToUpper(data), good, 1 << 20, true},
		{"over limit", data, good, 4, true},
		{"bad digest", data, ocispec.Descriptor{Digest: "sha256:nothex", Size: good.Size}, 1 << 20, true},
		{"unknown algorithm", data, ocispec.Descriptor{Digest: "md5:d41d8cd98f00b204e9800998ecf8427e", Size: good.Size}, 1 << 20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := backend.ReadAll(io.NopCloser(bytes.NewReader(tc.content)), tc.desc, tc.limit)
			if tc.mismatch != errors.Is(err, backend.ErrHashMismatch) {
				t.Fatalf("ReadAll: err %v, want mismatch %v", err, tc.mismatch)
			}
			if !tc.mismatch && !bytes.Equal(got, data) {
				t.Fatalf("ReadAll = %q", got)
			}
			if tc.name == "over limit" {
				return // VerifyReader streams: no limit
			}
			vr, err := backend.VerifyReader(io.NopCloser(bytes.NewReader(tc.content)), tc.desc)
			if err == nil {
				_, err = io.ReadAll(vr)
				vr.Close()
			}
			if tc.mismatch != errors.Is(err, backend.ErrHashMismatch) {
				t.Fatalf("VerifyReader: err %v, want mismatch %v", err, tc.mismatch)
			}
		})
	}
}
