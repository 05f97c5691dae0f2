// Package nar reads and writes Nix archives (NAR, "nix-archive-1").
//
// We read NARs fetched from untrusted binary caches and turn them into tar
// layers, so the reader has to be strict and must not be able to run away.
// go-nix's nar.Reader is not suitable for that:
//
//   - it runs its parser in a goroutine fed by unbuffered channels. That
//     goroutine leaks when a consumer abandons the archive midway or after an
//     error, and it keeps reading the underlying reader after Close;
//   - it races on its contentReader field, which both goroutines touch;
//   - it accepts the entry names "", "." and ".." (it only rejects "/" and
//     NUL, and path.Join then cleans the bad names away, so an entry ".."
//     silently becomes its parent directory), and it accepts duplicate
//     entries because its ordering check uses <=.
//
// Reader in this package is a synchronous, archive/tar style replacement.
// It parses on the caller's goroutine with go-nix's wire primitives, returns
// go-nix's nar.Header (aliased as Header) so callers use a single header type,
// accepts exactly the canonical form that Nix itself writes, and rejects
// everything else with an error wrapping ErrInvalid that names the offending
// path. Sizes read from the stream are never used to allocate memory, except
// for strings bounded by Limits. The reader never reads past the closing
// token of the archive; Offset tells the caller how many bytes were consumed.
//
// Writing is delegated to go-nix: Dump wraps nar.DumpPath with buffering.
package nar
