package narinfo

import "strings"

// DefaultStoreDir is the store directory Nix uses unless configured
// otherwise.
const DefaultStoreDir = "/nix/store"

// MaxSize is the largest input, in bytes, that Parse accepts.
const MaxSize = 1 << 20

// The keys of a narinfo that this package knows, in the order Nix writes them.
const (
	keyStorePath   = "StorePath"
	keyURL         = "URL"
	keyCompression = "Compression"
	keyFileHash    = "FileHash"
	keyFileSize    = "FileSize"
	keyNarHash     = "NarHash"
	keyNarSize     = "NarSize"
	keyReferences  = "References"
	keyDeriver     = "Deriver"
	keySystem      = "System"
	keySig         = "Sig"
	keyCA          = "CA"
)

// A Field is one "Key: value" line of a narinfo.
type Field struct {
	Key, Value string
}

// A NarInfo describes one store path in a binary cache: where its NAR is
// stored and how it is compressed, the NAR's hash and size, and the
// metadata Nix needs to register the path.
//
// Parse returns values whose hashes are normalised to
// "sha256:<nix-base32>" and whose Compression is set. A hand-built NarInfo
// may use any hash encoding NormaliseHash accepts; Format and Fingerprint
// normalise them.
type NarInfo struct {
	StorePath   string   // absolute, e.g. /nix/store/<hash>-<name>
	URL         string   // location of the compressed NAR, relative to the cache
	Compression string   // "xz", "zstd", "bzip2", "br" or "none"
	FileHash    string   // hash of the compressed file, "sha256:<nix32>"; optional
	FileSize    uint64   // size of the compressed file; optional
	NarHash     string   // hash of the NAR, "sha256:<nix32>"
	NarSize     uint64   // size of the NAR; must not be zero
	References  []string // base names ("<hash>-<name>") of referenced paths
	Deriver     string   // base name of the deriver, or "" if unknown
	System      string   // system the path was built for; optional
	Sigs        []string // signatures, each "<key name>:<base64>"
	CA          string   // content address, e.g. "fixed:r:sha256:..."; optional
	Extra       []Field  // keys this package does not know, in input order
}

// StoreDir returns the store directory of n.StorePath: everything before its
// last slash, such as "/nix/store". It returns "" if StorePath has no slash.
// It does not validate StorePath.
func (n *NarInfo) StoreDir() string {
	i := strings.LastIndexByte(n.StorePath, '/')
	if i < 0 {
		return ""
	}
	return n.StorePath[:i]
}

// HashPart returns the 32-character hash part of n.StorePath, which is also
// the name of the narinfo in a binary cache ("<hash part>.narinfo"). It
// returns "" if StorePath's base name is too short. It does not validate
// StorePath.
func (n *NarInfo) HashPart() string {
	base := n.StorePath[strings.LastIndexByte(n.StorePath, '/')+1:]
	if len(base) < hashPartLen {
		return ""
	}
	return base[:hashPartLen]
}

// isKnownKey reports whether key is one of the keys NarInfo has a field for.
func isKnownKey(key string) bool {
	switch key {
	case keyStorePath, keyURL, keyCompression, keyFileHash, keyFileSize,
		keyNarHash, keyNarSize, keyReferences, keyDeriver, keySystem,
		keySig, keyCA:
		return true
	}
	return false
}
