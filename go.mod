module github.com/nixoci/nixoci

go 1.26.8

require (
	github.com/klauspost/compress v1.20.3
	github.com/nix-community/go-nix v0.0.0-20250101154619-4bdde671e0a1
	github.com/opencontainers/go-digest v1.0.0
	github.com/opencontainers/image-spec v1.1.1
	github.com/ulikunitz/xz v0.5.15
	golang.org/x/crypto v0.59.0
	golang.org/x/sync v0.24.0
	oras.land/oras-go/v2 v2.7.0
)

require golang.org/x/sys v0.50.0
