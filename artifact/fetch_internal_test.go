package artifact

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestReadManifestChecks: wrong size, wrong content and a digest that
// does not parse are each ErrHashMismatch, never a panic.
func TestReadManifestChecks(t *testing.T) {
	const body = `{"schemaVersion":2}`
	good := ocispec.Descriptor{Digest: digest.FromString(body), Size: int64(len(body))}
	for _, tc := range []struct {
		name string
		desc ocispec.Descriptor
	}{
		{"short", ocispec.Descriptor{Digest: good.Digest, Size: good.Size + 1}},
		{"other content", ocispec.Descriptor{Digest: digest.FromString("other"), Size: good.Size}},
		{"unparsable digest", ocispec.Descriptor{Digest: "sha256:zz", Size: good.Size}},
		{"unknown algorithm", ocispec.Descriptor{Digest: "md5:d41d8cd98f00b204e9800998ecf8427e", Size: good.Size}},
	} {
		_, err := readManifest(io.NopCloser(strings.NewReader(body)), tc.desc)
		if !errors.Is(err, ErrHashMismatch) {
			t.Errorf("%s: %v, want ErrHashMismatch", tc.name, err)
		}
	}
	if data, err := readManifest(io.NopCloser(strings.NewReader(body)), good); err != nil || string(data) != body {
		t.Errorf("good manifest: %q, %v", data, err)
	}
}
