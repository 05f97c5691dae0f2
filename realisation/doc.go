// Package realisation reads and writes the realisations of
// content-addressed derivations as Nix binary caches hold them (SPEC.md
// section 12.2), in both layouts Nix has used:
//
//   - before Nix 2.35: `realisations/<id>.doi`, id "sha256:<hex of the
//     derivation's hash modulo>!<output>", body a JSON object with id,
//     outPath, signatures and dependentRealisations (Nix's
//     src/libstore/realisation.cc, 2.8 to 2.34);
//   - Nix 2.35: `build-trace-v2/<drv base name>/<output>.doi`, body the
//     entry's value, {"outPath", "signatures"} (NixOS/nix PR 12464,
//     doc/manual/source/protocols/binary-cache/index.md).
//
// Signatures are Ed25519 signatures of a fingerprint that differs between
// the layouts (the JSON of the entry without its signatures), so a
// signature made for one layout never verifies in the other.
package realisation
