// Package image turns closures stored as nixoci artifacts into OCI images
// that any runtime runs, with no base image: every store path becomes its
// own layer holding exactly nix/store/<name>/… (plus the shared parents
// nix/ and nix/store/), so layers are disjoint and their order does not
// change the unpacked tree. A small root layer adds symlinks into chosen
// store paths, /etc/passwd, /etc/group and /tmp.
//
// Layers are made by streaming NAR blobs out of the target into tar, with
// normalised metadata and pinned compression, so the same closure gives
// the same digests anywhere. Each converted layer is also stored as a
// small artifact tagged after its store path, so every later image that
// contains the path reuses it without converting it again.
//
// An image's platform is the Nix system its paths record, mapped as
// spec.SystemPlatform says. Closures of several systems make an OCI image
// index with one image per platform, each exactly the image of its
// closures alone (BuildPlatforms, BuildUnion; SPEC.md section 8.5).
package image
