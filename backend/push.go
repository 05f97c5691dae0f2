package backend

import (
	"bytes"
	"context"
	"errors"
	"io"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
)

// PushBlob stores content, the blob desc describes, in t unless t has it
// already: Exists, then Push, where ErrAlreadyExists (another writer was
// quicker) is success. On a registry an upload that fails transiently is
// sent again (see RetryAttempts) if content can seek back to where it
// started, as bytes.Reader, io.SectionReader, *os.File and a
// countio.Reader over one can.
func PushBlob(ctx context.Context, t content.Storage, desc ocispec.Descriptor, content io.Reader) error {
	ok, err := t.Exists(ctx, desc)
	if err != nil || ok {
		return err
	}
	if err := t.Push(ctx, desc, content); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		return err
	}
	return nil
}

// PushBytes is PushBlob of data held in memory.
func PushBytes(ctx context.Context, t content.Storage, desc ocispec.Descriptor, data []byte) error {
	return PushBlob(ctx, t, desc, bytes.NewReader(data))
}
