// Package substituter serves the Nix binary-cache HTTP protocol from
// nixoci artifacts, so that `substituters = http://…` in nix.conf points
// Nix at an OCI registry or image-layout directory.
//
// A narinfo request is answered by the resolver (resolver.go): it asks
// its sources in order (each backend by tag, then each backend's catalog
// of closures; Source is the seam for other kinds, such as an upstream
// binary cache), checks what the first found against the hash asked for
// and its NAR, and renders it with the stored signatures plus, under the
// trust policy (trust.go), one per signing key of the server. A NAR
// request streams the blob whose digest is the NAR's FileHash, never
// recompressed and never buffered whole. A backend that fails, or holds
// something other than it claims, is answered with 502/503/504, never
// 404: Nix caches 404s for an hour.
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
