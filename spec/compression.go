package spec

import "fmt"

// Compression names a NAR compression as narinfo's Compression field does.
type Compression string

// The compressions nixoci writes. Nix reads all three.
const (
	CompressionZstd Compression = "zstd"
	CompressionXz   Compression = "xz"
	CompressionNone Compression = "none"
)

// DefaultCompression is used when the user names none: zstd compresses
// over twenty times faster than xz at a size Nix 2.3 and later read.
const DefaultCompression = CompressionZstd

// Reproducible codec settings. Changing any of them changes digests, so
// they belong to the format version.
const (
	// XzChunkSize is the NAR size compressed as one independent xz stream.
	// Larger NARs are split at multiples of it and the streams are
	// concatenated, which xz and Nix read as one file; the fixed size keeps
	// output identical whatever the parallelism.
	XzChunkSize = 32 << 20
	// XzDictCap is the LZMA2 dictionary size (capped at the chunk length).
	XzDictCap = 32 << 20
	// ZstdLevel names the klauspost/compress zstd encoder level
	// ("default", zstd level 3), used with one encoder goroutine per NAR and
	// an 8 MiB window. The library version is pinned in go.mod.
	ZstdLevel = "default"
	// ZstdWindowSize is the zstd window.
	ZstdWindowSize = 8 << 20
)

// ParseCompression parses a compression name, accepting "" as the default.
func ParseCompression(s string) (Compression, error) {
	switch c := Compression(s); c {
	case "":
		return DefaultCompression, nil
	case CompressionZstd, CompressionXz, CompressionNone:
		return c, nil
	}
	return "", fmt.Errorf("unknown compression %q (want zstd, xz or none)", s)
}

// MediaType is the blob media type of a NAR with this compression.
func (c Compression) MediaType() string {
	switch c {
	case CompressionXz:
		return MediaTypeNARXz
	case CompressionZstd:
		return MediaTypeNARZstd
	case CompressionNone:
		return MediaTypeNAR
	}
	return ""
}

// Ext is the file extension Nix uses for a NAR with this compression.
func (c Compression) Ext() string {
	switch c {
	case CompressionXz:
		return ".nar.xz"
	case CompressionZstd:
		return ".nar.zst"
	case CompressionNone:
		return ".nar"
	}
	return ""
}

// CompressionOfMediaType reports the compression of a NAR blob media type.
func CompressionOfMediaType(mediaType string) (Compression, bool) {
	switch mediaType {
	case MediaTypeNARXz:
		return CompressionXz, true
	case MediaTypeNARZstd:
		return CompressionZstd, true
	case MediaTypeNAR:
		return CompressionNone, true
	}
	return "", false
}

// NarURL is the narinfo URL, and the layer title, of a compressed NAR whose
// FileHash is sha256:fileHashNix32.
func NarURL(fileHashNix32 string, c Compression) string {
	return "nar/" + fileHashNix32 + c.Ext()
}
