// Package source reads store paths from where they already are, for
// artifact.Push: the local Nix store (LocalStore, through the Nix
// command-line tools) and existing binary caches (BinaryCache: a file://
// directory as `nix copy --to file://` writes, or an http(s) cache).
// Both implement artifact.Source: they list the narinfos of a closure and
// write each path's compressed NAR, checking it against that metadata as
// it streams.
package source
