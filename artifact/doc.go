// Package artifact packs Nix store paths as OCI artifacts and reads them
// back, following spec/SPEC.md (format version 3):
//
//   - one manifest per store path, tagged with its hash part, holding its
//     compressed NAR and its narinfo (section 4); pushed from a local
//     store, its System comes from the path's deriver when that is there
//     (version 3, section 4.1);
//   - one image index per pushed closure (version 2, section 5.1), tagged
//     as the user asks: it lists every path manifest of the closure, each
//     entry annotated with the path's narinfo, and a cache-info manifest
//     holding nix-cache-info, with the first root's path manifest as its
//     subject; a closure too large for one index is split into part
//     indexes (section 5.2). `oras pull` of it writes a Nix binary cache,
//     and OCI copy tools carry the whole closure.
//
// Readers also read version 1 closures (one manifest holding every blob
// of the closure, or parts of it, section 5.4), which Push still writes
// on request (PushOptions.ClosureVersion).
//
// Push takes its store paths from a Source, such as the local Nix store or
// an existing binary cache (package source). Writes go blobs first, then
// manifests, then the tag, so a tag never names an incomplete artifact;
// push records (section 10.1) follow the tag, and pushes and copies
// repair what a garbage collection racing them deleted (section 10.3).
package artifact
