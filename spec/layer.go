package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// LayerCompression is the compression of image layers.
type LayerCompression string

// Layer compressions: gzip (default; every client reads it) and zstd
// (OCI-aware clients only). gzip is github.com/klauspost/compress/gzip at
// the pinned version, default level, empty header (no name, mtime 0);
// zstd uses the NAR settings.
const (
	LayerGzip LayerCompression = "gzip"
	LayerZstd LayerCompression = "zstd"
)

// ParseLayerCompression parses "gzip" (also the default for "") or "zstd".
func ParseLayerCompression(s string) (LayerCompression, error) {
	switch s {
	case "", "gzip":
		return LayerGzip, nil
	case "zstd":
		return LayerZstd, nil
	}
	return "", fmt.Errorf("unknown layer compression %q (want gzip or zstd)", s)
}

// MediaType is the OCI layer media type.
func (c LayerCompression) MediaType() string {
	if c == LayerZstd {
		return ocispec.MediaTypeImageLayerZstd
	}
	return ocispec.MediaTypeImageLayerGzip
}

// DefaultMaxLayers is the default cap on image layers: well below the
// ~127 lower layers overlay-based runtimes accept, leaving room for users
// who add layers on top.
const DefaultMaxLayers = 100

// LayerTag is the tag of the layer artifact (SPEC.md section 8.2) of the
// store paths with hash parts hashes, in store-path order:
// "<hash>.layer.<compression>" for one path,
// "group.<first 40 hex digits of the sha256 of the hash parts, one a
// line>.<compression>" for several.
func LayerTag(hashes []string, c LayerCompression) string {
	if len(hashes) == 1 {
		return hashes[0] + ".layer." + string(c)
	}
	h := sha256.New()
	for _, hp := range hashes {
		io.WriteString(h, hp+"\n")
	}
	return "group." + hex.EncodeToString(h.Sum(nil))[:40] + "." + string(c)
}
