# The test command of the README: static checks, then unit and conformance
# tests together. Conformance tests need Nix, docker-registry, oras, skopeo,
# umoci and runc (.ci/run installs them); without them they are skipped,
# unless NIXOCI_REQUIRE_TOOLS=1.
GO ?= go

.PHONY: test check build demo bench

test: check
	$(GO) test -timeout 30m ./...

check:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

build:
	$(GO) build -o bin/nixoci ./cmd/nixoci

# The main job end to end on the embedded default store: build a small
# closure with Nix, push it, pull it back as a binary cache, substitute
# from it into a fresh store.
demo: build
	./scripts/demo.sh
