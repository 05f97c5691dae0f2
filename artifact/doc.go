// Package artifact packs Nix store paths as OCI artifacts and reads them
// back, following spec/SPEC.md: one manifest per store path (tagged with
// its hash part) holding the compressed NAR and the narinfo, and one
// manifest per pushed closure holding every blob of the closure plus a
// nix-cache-info, so that `oras pull` writes a Nix binary cache.
//
// Push takes its store paths from a Source, such as the local Nix store or
// an existing binary cache (package source). Writes go blobs first, then
// the manifest, then the tag, so a tag never names an incomplete
// artifact.
package artifact
