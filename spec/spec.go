package spec

import "strconv"

// Version is the format version of store-path, layer and image artifacts
// and of version 1 closures, written into their manifests
// (AnnotationVersion) so that readers can refuse formats they do not
// understand. Format version 2 of SPEC.md changed only closures.
const Version = "1"

// Closure format versions (SPEC.md section 5), as a closure's
// AnnotationVersion and artifact.Closure.Version say them: version 1 is a
// manifest of NAR and narinfo layers (section 5.4), version 2 an image
// index of path manifests (section 5.1). Readers read both.
const (
	ClosureV1 = "1"
	ClosureV2 = "2"
)

// ClosureVersion is the version of the closures nixoci writes unless
// told otherwise.
const ClosureVersion = ClosureV2

// FormatVersion is the version of SPEC.md this code implements. Version
// 3 records the System of local store paths from their derivers and adds
// image indexes; version 4 adds artifacts for build logs, realisations,
// NAR listings and debug-info entries (section 12); version 5 gives
// image configs a history entry per layer and image users a home. No
// artifact changed shape, so the versions above stay.
const FormatVersion = "5"

// Artifact types: the artifactType of the manifests nixoci writes.
const (
	// ArtifactTypePath marks the manifest of one store path, tagged with
	// the path's hash part.
	ArtifactTypePath = "application/vnd.nixoci.path.v1"
	// ArtifactTypeClosure marks the manifest (or, when split, the image
	// index) of one pushed closure, tagged by the user.
	ArtifactTypeClosure = "application/vnd.nixoci.closure.v1"
	// ArtifactTypeClosurePart marks one part of a closure too large for a
	// single manifest; the parts are listed by an index of type
	// ArtifactTypeClosure.
	ArtifactTypeClosurePart = "application/vnd.nixoci.closure.part.v1"

	// ArtifactTypeClosureV2 marks the image index of a version 2 closure,
	// which lists the closure's path manifests (or its part indexes) and
	// whose subject is the first root's path manifest.
	ArtifactTypeClosureV2 = "application/vnd.nixoci.closure.v2"
	// ArtifactTypeClosurePartV2 marks one part index of a version 2
	// closure too large for one index.
	ArtifactTypeClosurePartV2 = "application/vnd.nixoci.closure.part.v2"
	// ArtifactTypeCacheInfo marks the manifest holding a version 2
	// closure's nix-cache-info blob.
	ArtifactTypeCacheInfo = "application/vnd.nixoci.cache-info.v2"
)

// Blob media types.
const (
	// MediaTypeNAR is an uncompressed NAR (narinfo "Compression: none").
	MediaTypeNAR = "application/vnd.nixoci.nar.v1"
	// MediaTypeNARXz is a NAR compressed as one or more concatenated xz
	// streams (narinfo "Compression: xz").
	MediaTypeNARXz = "application/vnd.nixoci.nar.v1+xz"
	// MediaTypeNARZstd is a NAR compressed as a zstd frame (narinfo
	// "Compression: zstd").
	MediaTypeNARZstd = "application/vnd.nixoci.nar.v1+zstd"
	// MediaTypeNarInfo is a narinfo file as Nix reads it.
	MediaTypeNarInfo = "application/vnd.nixoci.narinfo.v1"
	// MediaTypeCacheInfo is a nix-cache-info file.
	MediaTypeCacheInfo = "application/vnd.nixoci.nix-cache-info.v1"
)

// AnnotationPrefix is the namespace of every annotation key nixoci defines.
const AnnotationPrefix = "dev.nixoci."

// Manifest annotations of a store-path manifest. Together with the NAR
// layer's descriptor (digest = FileHash, size = FileSize, media type =
// Compression, title = URL) they hold everything a narinfo needs, so a
// substituter answers a narinfo request with one manifest fetch.
const (
	AnnotationVersion    = AnnotationPrefix + "version"    // spec Version
	AnnotationStorePath  = AnnotationPrefix + "store-path" // absolute store path
	AnnotationNarHash    = AnnotationPrefix + "nar-hash"   // sha256:<nix32>
	AnnotationNarSize    = AnnotationPrefix + "nar-size"   // decimal bytes
	AnnotationReferences = AnnotationPrefix + "references" // base names, space separated, sorted
	AnnotationDeriver    = AnnotationPrefix + "deriver"    // base name; absent if unknown
	AnnotationSystem     = AnnotationPrefix + "system"     // e.g. x86_64-linux; absent if unknown
	AnnotationSigs       = AnnotationPrefix + "sigs"       // Sig values, space separated
	AnnotationCA         = AnnotationPrefix + "ca"         // content address; absent if none
)

// Manifest annotations of a closure manifest, index or part.
const (
	AnnotationRoots     = AnnotationPrefix + "roots"      // root store paths, space separated, sorted
	AnnotationPathCount = AnnotationPrefix + "path-count" // number of store paths in the closure
	AnnotationPart      = AnnotationPrefix + "part"       // "<i>/<n>" on split parts, 1-based
	// AnnotationNarInfo on an entry of a version 2 closure index: the
	// narinfo of the path, as its narinfo blob holds it. The path manifest
	// is a function of it (section 4), so a reader checks it against the
	// entry's digest and needs not fetch the manifest.
	AnnotationNarInfo = AnnotationPrefix + "narinfo"
)

// AnnotationTitle is the standard OCI title annotation. oras pull writes
// each layer to the path it names, which is how a pulled closure becomes a
// binary cache directory.
const AnnotationTitle = "org.opencontainers.image.title"

// MaxManifestSize is the largest manifest nixoci writes. Registries are
// only required to accept manifests up to 4 MiB; closures whose manifest
// would be larger are split into parts (see SPEC.md, "Large closures").
const MaxManifestSize = 4 << 20

// DefaultPriority is the substituter priority a nix-cache-info announces
// unless told otherwise: 40, as cache.nixos.org, so Nix asks both alike.
const DefaultPriority = 40

// CacheInfo is the content of a nix-cache-info file for paths that live
// in storeDir (normally /nix/store), announcing priority (lower is
// preferred). Closures store CacheInfo(storeDir, DefaultPriority); `nixoci
// serve` answers /nix-cache-info with its configured priority.
func CacheInfo(storeDir string, priority int) string {
	return "StoreDir: " + storeDir + "\nWantMassQuery: 1\nPriority: " + strconv.Itoa(priority) + "\n"
}

// Image layers (see SPEC.md, "Images").
const (
	// ArtifactTypeLayer marks the artifact that records the converted layer
	// of one store path (or one group of paths), tagged
	// "<hash>.layer.<compression>" or "group.<id>.<compression>", so later
	// images reuse it.
	ArtifactTypeLayer = "application/vnd.nixoci.layer.v1"
	// AnnotationPathManifest: digests of the store-path manifests a layer
	// was made from (space separated, in the order of store-path).
	AnnotationPathManifest = AnnotationPrefix + "path-manifest"
	// AnnotationDiffID: the layer's uncompressed digest (layer artifacts).
	AnnotationDiffID = AnnotationPrefix + "diff-id"
	// AnnotationRootTypes: per store path, "directory", "regular" or
	// "symlink" (layer artifacts; used for nix-snapshotter mountpoints).
	AnnotationRootTypes = AnnotationPrefix + "root-types"
	// AnnotationLayerRole is "root" on the root-filesystem layer.
	AnnotationLayerRole = AnnotationPrefix + "layer"
	// AnnotationClosure on an image manifest: the closure it was made from.
	AnnotationClosure = AnnotationPrefix + "closure"
)

// nix-snapshotter's annotations (containerd.io/snapshot/…), on the one
// layer whose store paths the node's Nix realises.
const (
	AnnotationNixLayer           = "containerd.io/snapshot/nix-layer"
	AnnotationNixStorePathPrefix = "containerd.io/snapshot/nix-store-path."
)
