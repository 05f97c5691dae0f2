// Package substituter serves the Nix binary-cache HTTP protocol from
// nixoci artifacts, so that `substituters = http://…` in nix.conf points
// Nix at an OCI registry or image-layout directory.
//
// A narinfo request is answered from one store-path manifest (one registry
// round trip when not cached), with the stored signatures plus one per
// signing key of the server. A NAR request streams the blob whose digest
// is the NAR's FileHash, never recompressed and never buffered whole. A
// backend that fails is answered with 502/503/504, never 404: Nix caches
// 404s for an hour.
//
// With uploads enabled and credentials configured, `nix copy --to
// http://…` is translated into the same writes as `nixoci push`: NAR
// blob, narinfo blob, manifest, tag, with the narinfo PUT as the commit
// point.
//
// Backend fan-out, blob streaming, the caches, metrics and access logs
// come from package internal/serving, shared with package imageregistry,
// which `nixoci serve --registry` mounts under /v2/ on the same listener
// and backends; /metrics, served here, shows both.
package substituter
