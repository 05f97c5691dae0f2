package artifact_test

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// blobMap serves the blobs it holds by digest; nothing else of a Target
// is used by a closure reader.
type blobMap struct {
	backend.Target
	blobs map[digest.Digest][]byte
}

func (m blobMap) Fetch(_ context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	b, ok := m.blobs[d.Digest]
	if !ok {
		return nil, errdef.ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// FuzzClosureIndex: reading an arbitrary closure index (and one part
// index it may list) never panics, and what it accepts holds what a
// reader relies on: as many members as the index says, each a valid and
// distinct hash part, each entry's path (if taken from it) the store
// path it names, within the reader's bounds.
func FuzzClosureIndex(f *testing.F) {
	var paths []artifact.PathArtifact
	for _, name := range []string{"fz-a", "fz-b", "fz-c"} {
		paths = append(paths, fakePath(f, name, name, "fz-c"))
	}
	for _, limit := range []int{0, 1500} {
		ci, err := artifact.NewClosureIndex([]string{paths[0].Info.StorePath}, paths, "/nix/store", limit)
		if err != nil {
			f.Fatal(err)
		}
		part := []byte{}
		if len(ci.Parts) > 0 {
			part = ci.Parts[0].Data
		}
		f.Add(ci.Top.Data, part)
	}
	f.Fuzz(func(t *testing.T, top, part []byte) {
		m := blobMap{blobs: map[digest.Digest][]byte{digest.FromBytes(part): part}}
		desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(top), Size: int64(len(top))}
		r := artifact.ClosureReader{MaxPaths: 50, MaxParts: 4}
		c, err := r.Parse(context.Background(), m, "fuzz", desc, top)
		if err != nil {
			return
		}
		if c.Version == spec.ClosureV2 && len(c.Members) != c.PathCount {
			t.Errorf("%d members, path count %d", len(c.Members), c.PathCount)
		}
		if len(c.Members) > r.MaxPaths || c.Parts > r.MaxParts {
			t.Errorf("%d members in %d parts, over the bounds", len(c.Members), c.Parts)
		}
		seen := map[string]bool{}
		for _, mem := range c.Members {
			if !spec.IsHashPart(mem.Hash) || seen[mem.Hash] {
				t.Errorf("member hash %q invalid or repeated", mem.Hash)
			}
			seen[mem.Hash] = true
			if mem.StorePath != "" && spec.PathTag(mem.StorePath) != mem.Hash {
				t.Errorf("member %s has hash %s", mem.StorePath, mem.Hash)
			}
			if mem.Path != nil && (mem.Path.Info.StorePath != mem.StorePath || mem.Path.Manifest.Digest != mem.Manifest.Digest) {
				t.Errorf("member %s: path from its entry is %s in %s", mem.StorePath, mem.Path.Info.StorePath, mem.Path.Manifest.Digest)
			}
		}
	})
}
