// Package spec holds the names that make up nixoci's artifact format:
// media types, annotation keys, tag rules and the reproducible codec
// settings. SPEC.md in this directory is the normative text; the constants
// here are its machine-readable half, and examples/ holds manifests that
// the tests regenerate from code and compare byte for byte.
package spec
