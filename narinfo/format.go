package narinfo

import (
	"io"
	"strconv"
	"strings"
)

// Format returns n in the narinfo text format, with the keys in the order
// Nix writes them, followed by n.Extra in order. Hashes are written as
// "sha256:<nix-base32>". The References line is always written, even when
// empty; FileHash, FileSize, Deriver, System and CA are written only when
// set. Format validates n first (see Validate) and writes nothing if it is
// invalid, so a value can never add a line of its own.
func (n *NarInfo) Format() ([]byte, error) {
	if err := n.Validate(); err != nil {
		return nil, err
	}
	narHash, err := NormaliseHash(n.NarHash)
	if err != nil {
		return nil, err
	}
	fileHash := ""
	if n.FileHash != "" {
		if fileHash, err = NormaliseHash(n.FileHash); err != nil {
			return nil, err
		}
	}

	var b []byte
	line := func(key, value string) {
		b = append(b, key...)
		b = append(b, ": "...)
		b = append(b, value...)
		b = append(b, '\n')
	}
	line(keyStorePath, n.StorePath)
	line(keyURL, n.URL)
	line(keyCompression, n.Compression)
	if fileHash != "" {
		line(keyFileHash, fileHash)
	}
	if fileHash != "" || n.FileSize != 0 {
		line(keyFileSize, strconv.FormatUint(n.FileSize, 10))
	}
	line(keyNarHash, narHash)
	line(keyNarSize, strconv.FormatUint(n.NarSize, 10))
	line(keyReferences, strings.Join(n.References, " "))
	if n.Deriver != "" {
		line(keyDeriver, n.Deriver)
	}
	if n.System != "" {
		line(keySystem, n.System)
	}
	for _, s := range n.Sigs {
		line(keySig, s)
	}
	if n.CA != "" {
		line(keyCA, n.CA)
	}
	for _, f := range n.Extra {
		line(f.Key, f.Value)
	}
	return b, nil
}

// WriteTo writes the bytes Format returns to w. It writes nothing if n is
// invalid. It implements io.WriterTo.
func (n *NarInfo) WriteTo(w io.Writer) (int64, error) {
	b, err := n.Format()
	if err != nil {
		return 0, err
	}
	m, err := w.Write(b)
	return int64(m), err
}
