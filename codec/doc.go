// Package codec compresses and decompresses NARs reproducibly: the same
// input gives the same bytes on any machine and at any parallelism. The
// settings are part of the artifact format and named in package spec.
package codec
