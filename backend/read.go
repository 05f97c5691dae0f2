package backend

import (
	"context"
	"errors"
	"fmt"
	"io"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"

	"github.com/nixoci/nixoci/spec"
)

// ErrHashMismatch: content does not have the size or digest its
// descriptor says.
var ErrHashMismatch = errors.New("hash mismatch")

// MaxManifestRead bounds how much of a manifest or index nixoci reads
// into memory: the size every registry must accept (spec.MaxManifestSize),
// the largest nixoci writes.
const MaxManifestRead = spec.MaxManifestSize

// ReadAll reads what rc holds for desc whole and closes rc. Content over
// limit bytes (by its descriptor) is refused before anything is read;
// content whose size or digest differs from desc is ErrHashMismatch.
// It is oras-go's content.ReadAll with the bound and the error nixoci
// callers branch on.
func ReadAll(rc io.ReadCloser, desc ocispec.Descriptor, limit int64) ([]byte, error) {
	defer rc.Close()
	if desc.Size > limit {
		return nil, fmt.Errorf("%s: %d bytes, over the %d-byte limit: %w", desc.Digest, desc.Size, limit, ErrHashMismatch)
	}
	// go-digest's Verifier panics on a digest it cannot parse.
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("%q: %v: %w", desc.Digest, err, ErrHashMismatch)
	}
	data, err := content.ReadAll(rc, desc)
	if err != nil {
		return nil, verifyError(desc, err)
	}
	return data, nil
}

// FetchAll fetches desc from f and reads it with ReadAll.
func FetchAll(ctx context.Context, f content.Fetcher, desc ocispec.Descriptor, limit int64) ([]byte, error) {
	rc, err := f.Fetch(ctx, desc)
	if err != nil {
		return nil, err
	}
	return ReadAll(rc, desc, limit)
}

// FetchManifest resolves reference (a tag or digest) in f and reads the
// manifest or index it names, verified and bounded by MaxManifestRead, in
// one round trip.
func FetchManifest(ctx context.Context, f registry.ReferenceFetcher, reference string) (ocispec.Descriptor, []byte, error) {
	desc, rc, err := f.FetchReference(ctx, reference)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	data, err := ReadAll(rc, desc, MaxManifestRead)
	if err != nil {
		return desc, nil, fmt.Errorf("manifest %w", err)
	}
	return desc, data, nil
}

// VerifyReader wraps rc, the stream of desc's content, so that a read
// past the end of content whose size or digest differs from desc fails
// with ErrHashMismatch instead of io.EOF. The caller closes it.
func VerifyReader(rc io.ReadCloser, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if err := desc.Digest.Validate(); err != nil {
		rc.Close()
		return nil, fmt.Errorf("%q: %v: %w", desc.Digest, err, ErrHashMismatch)
	}
	return &verifyReader{vr: content.NewVerifyReader(rc, desc), rc: rc, desc: desc}, nil
}

type verifyReader struct {
	vr   *content.VerifyReader
	rc   io.Closer
	desc ocispec.Descriptor
}

func (v *verifyReader) Read(p []byte) (int, error) {
	n, err := v.vr.Read(p)
	if err == io.EOF {
		if verr := v.vr.Verify(); verr != nil {
			return n, verifyError(v.desc, verr)
		}
	} else if err != nil {
		return n, verifyError(v.desc, err)
	}
	return n, err
}

func (v *verifyReader) Close() error { return v.rc.Close() }

// verifyError names desc in err. Content shorter than desc says is
// ErrHashMismatch and stays transient (io.ErrUnexpectedEOF: a cut body
// looks the same, and a retry tells them apart); other read failures
// (resets, stalls) stay what they are; anything else is ErrHashMismatch.
func verifyError(desc ocispec.Descriptor, err error) error {
	if !errors.Is(err, io.ErrUnexpectedEOF) && IsTransient(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", desc.Digest, err)
	}
	return fmt.Errorf("%s: %w: %w", desc.Digest, ErrHashMismatch, err)
}
