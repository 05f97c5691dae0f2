// Package imageregistry serves the read-only OCI distribution API
// (https://github.com/opencontainers/distribution-spec) under /v2/, with
// images composed on demand from stored closures: the Nixery idea,
// without evaluating Nix. `nixoci serve --registry` mounts it beside the
// binary-cache server of package substituter, on the same backends.
//
// A repository name is a list of closure tags (or friendly names from
// Options.Names) separated by "/", and its image, tagged latest (its one
// tag), is the union of those closures, one layer per store path, built
// with package image in the first backend holding all of them. Names
// listing the same closures are one composition; at most
// Options.MaxCompositions run at once. Layers are converted once and
// reused by every later image; a name whose layers exist answers at
// once. A repository serves only the manifests and blobs its image
// reaches, streamed from the backends through package serving, verified
// against their digests, and lists their referrers (SPEC.md section 9).
package imageregistry
