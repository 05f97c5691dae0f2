// Package backend opens the places nixoci keeps artifacts: an OCI
// image-layout directory ("oci:DIR", the embedded default) or a repository
// in any OCI registry ("HOST[:PORT]/REPO"). Both are oras.Target values, so
// every other package reads and writes them the same way.
//
// Layouts are safe for several processes at once: blobs are written to a
// temporary file and renamed into place (oras-go's oci.Storage), and
// index.json is rewritten under an exclusive file lock, atomically, with
// its entries in a stable order.
//
// Registries are retried in one place, here: every operation on a remote
// target is tried at most RetryAttempts times on transient failures, with
// jittered, bounded waits, and a body that breaks off resumes where it
// stopped (see RetryAttempts and Retry). Callers, and the HTTP client,
// never retry on their own. Reads are verified against their descriptors
// with ReadAll, FetchAll, FetchManifest and VerifyReader, and blobs are
// written with PushBlob.
package backend
