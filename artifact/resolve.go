package artifact

import (
	"context"
	"fmt"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// PathClaim is what a reader was told about a store path before reading
// its artifact: the hash part it asked for (a narinfo request, a tag),
// and, when a closure index listed the path, the whole store path and
// the path manifest the entry names. Everything in a registry is
// untrusted: ResolvePath reads the artifact the claim leads to and checks
// it against every part of the claim (SPEC.md section 4.2).
type PathClaim struct {
	// Hash is the store path's hash part; "" claims none (a path manifest
	// read by digest alone).
	Hash string
	// StorePath is the whole store path, if known.
	StorePath string
	// Manifest is the path manifest, if known (digest and size); the
	// artifact is then read by digest, else by the tag Hash.
	Manifest ocispec.Descriptor
}

// String names where the claim leads: the manifest digest or the tag.
func (c PathClaim) String() string {
	if c.Manifest.Digest != "" {
		return "manifest " + c.Manifest.Digest.String()
	}
	return "tag " + c.Hash
}

// Check reports whether art is what the claim says: a store path with
// the claimed hash part (and the claimed store path), in the claimed
// manifest. A claim that does not hold is an error naming the artifact,
// wrapping ErrClaimMismatch.
func (c PathClaim) Check(art PathArtifact) error {
	sp := art.Info.StorePath
	switch {
	case c.Manifest.Digest != "" && (art.Manifest.Digest != c.Manifest.Digest || c.Manifest.Size != 0 && art.Manifest.Size != c.Manifest.Size):
		return fmt.Errorf("%s: the artifact read is manifest %s (%d bytes), claimed %d bytes: %w", c, art.Manifest.Digest, art.Manifest.Size, c.Manifest.Size, ErrClaimMismatch)
	case c.Hash != "" && spec.PathTag(sp) != c.Hash, c.StorePath != "" && sp != c.StorePath:
		return fmt.Errorf("%s holds %s (manifest %s), claimed to hold %s: %w", c, sp, art.Manifest.Digest, c.claimed(), ErrClaimMismatch)
	}
	return nil
}

// claimed names the path claimed: the store path, else its hash part.
func (c PathClaim) claimed() string {
	if c.StorePath != "" {
		return c.StorePath
	}
	return "the path with hash part " + c.Hash
}

// ResolvePath reads the store-path artifact the claim leads to in t, by
// manifest digest if the claim names one, else by the tag Hash, and
// checks it against the claim (PathClaim.Check) and the format (the
// narinfo it renders agrees with its NAR layer: ParsePathManifest). A
// missing tag or manifest is an error wrapping errdef.ErrNotFound; an
// artifact that is not a store path's wraps ErrNotArtifact; one that is
// not what was claimed wraps ErrClaimMismatch.
func ResolvePath(ctx context.Context, t backend.Target, c PathClaim) (PathArtifact, error) {
	art, _, err := ResolvePathManifest(ctx, t, c)
	return art, err
}

// ResolvePathManifest is ResolvePath that also returns the manifest's
// bytes (to copy them elsewhere).
func ResolvePathManifest(ctx context.Context, t backend.Target, c PathClaim) (PathArtifact, []byte, error) {
	if c.Manifest.Digest == "" && !spec.IsHashPart(c.Hash) {
		return PathArtifact{}, nil, fmt.Errorf("%q is not a store path's hash part: %w", c.Hash, ErrNotArtifact)
	}
	var art PathArtifact
	var data []byte
	var err error
	if c.Manifest.Digest != "" {
		if data, err = backend.FetchAll(ctx, t, c.Manifest, backend.MaxManifestRead); err != nil {
			return PathArtifact{}, nil, fmt.Errorf("path manifest %w", err)
		}
		art, err = ParsePathManifest(c.Manifest, data)
	} else {
		var desc ocispec.Descriptor
		if desc, data, err = backend.FetchManifest(ctx, t, c.Hash); err != nil {
			return PathArtifact{}, nil, err
		}
		if art, err = ParsePathManifest(desc, data); err != nil {
			err = fmt.Errorf("tag %s: %w", c.Hash, err)
		}
	}
	if err != nil {
		return PathArtifact{}, nil, err
	}
	if err := c.Check(art); err != nil {
		return PathArtifact{}, nil, err
	}
	return art, data, nil
}

// PathFromEntry reads a path's artifact from its version 2 closure index
// entry without fetching the manifest (SPEC.md section 5.1): the artifact
// made from the entry's narinfo must have exactly the manifest the entry
// names, and hold the entry's store path, so nothing is taken on trust.
// It reports false if the entry carries no narinfo or one that does not
// give that manifest (the caller then reads the manifest, ResolvePath).
func PathFromEntry(d ocispec.Descriptor) (PathArtifact, bool) {
	text, ok := d.Annotations[spec.AnnotationNarInfo]
	if !ok || len(text) > narinfo.MaxSize {
		return PathArtifact{}, false
	}
	info, err := narinfo.Parse(strings.NewReader(text))
	if err != nil || info.StorePath != d.Annotations[spec.AnnotationStorePath] {
		return PathArtifact{}, false
	}
	art, _, _, err := NewPathArtifact(info)
	if err != nil || art.Manifest.Digest != d.Digest || art.Manifest.Size != d.Size {
		return PathArtifact{}, false
	}
	return art, true
}
