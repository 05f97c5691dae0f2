// Package serving holds what nixoci's two HTTP servers share: the
// Nix binary-cache protocol (package substituter) and the read-only OCI
// distribution API composing images (package imageregistry), mounted on
// one listener by `nixoci serve`.
//
// Backends fans requests out to the configured backends in order, within
// one bound on concurrent backend requests, and remembers where blobs are.
// ServeBlob streams a blob with Range support, verifying it against its
// digest as it goes (a corrupt blob is cut short, never delivered whole),
// and sends layout files verified before straight from the file
// (sendfile). Handler refuses malformed paths and counts and logs each
// request; Metrics is what /metrics shows; LRU is the size- and
// time-bounded cache behind all of it.
package serving
