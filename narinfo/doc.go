// Package narinfo reads, writes, fingerprints, signs and verifies Nix
// .narinfo files, the small text files a Nix binary cache serves for every
// store path it holds.
//
// # Format
//
// A narinfo is UTF-8 text with one "Key: value" pair per line, each line
// ended by '\n'. The key is separated from the value by exactly ": "; the
// value runs to the end of the line and may be empty. Nix writes the keys in
// this order:
//
//	StorePath, URL, Compression, FileHash, FileSize, NarHash, NarSize,
//	References, Deriver, System, Sig (any number of times), CA
//
// and [NarInfo.Format] writes them in the same order, followed by any keys
// this package does not know (kept in [NarInfo.Extra] by [Parse]), so that a
// narinfo written by Nix survives a Parse/Format round trip byte for byte.
//
// [Parse] is strict about structure and lenient only where Nix is:
//
//   - Lines must contain ": ". Keys must be non-empty and consist of ASCII
//     letters, digits, '-', '_' and '.'.
//   - CRLF line endings are rejected: any '\r' in the input is an error.
//     Empty lines are errors too, except at the very end of the input.
//     The final line need not end in '\n'.
//   - Inputs larger than [MaxSize] are rejected with [ErrTooLarge].
//   - StorePath, URL, NarHash and NarSize are required; NarSize must not be
//     zero. A missing Compression means "bzip2", as it does for Nix.
//   - Known keys other than Sig may appear only once.
//   - Hashes (NarHash, FileHash) must be SHA-256 and may use any encoding
//     Nix accepts: "sha256:" followed by nix-base32, hex or base64, or an
//     SRI string "sha256-<base64>". They are normalised to
//     "sha256:<nix-base32>".
//   - References and Deriver hold store path base names ("<hash>-<name>");
//     "Deriver: unknown-deriver" is read as no deriver. The store directory
//     is whatever directory StorePath names, so stores other than
//     /nix/store work.
//
// Errors that concern one line are [*ParseError] values carrying the 1-based
// line number. All errors match one of the sentinel errors ([ErrSyntax],
// [ErrMissingField], [ErrInvalidValue], [ErrTooLarge], [ErrInvalidKey])
// under [errors.Is].
//
// # Signatures
//
// A binary cache signs a narinfo by signing its fingerprint
// ([NarInfo.Fingerprint]),
//
//	1;<store path>;<NarHash>;<NarSize>;<sorted, comma-separated reference paths>
//
// with an Ed25519 key, and records the result as a "Sig: <key name>:<base64
// signature>" line. Keys use the format of nix-store
// --generate-binary-cache-key: "<name>:<base64 key>", where the secret key is
// the 64-byte Ed25519 private key and the public key its 32-byte public half.
// See [SecretKey], [PublicKey] and [NarInfo.AddSignature].
package narinfo
