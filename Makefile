# The test command of the README: static checks, unit and conformance
# tests, then each fuzz target for a short, fixed time. Conformance tests
# need Nix, docker-registry, oras, skopeo, umoci and runc (.ci/run installs
# them); without them they are skipped, unless NIXOCI_REQUIRE_TOOLS=1.
GO ?= go
FUZZTIME ?= 10s
STATICCHECK ?= $(shell command -v staticcheck || echo $(HOME)/go/bin/staticcheck)

# package:target pairs run by `make fuzz`.
FUZZ_TARGETS = ./narinfo:FuzzParse ./nar:FuzzReader ./image:FuzzWriteNAR \
	./backend:FuzzParseRef ./substituter:FuzzServeHTTP ./imageregistry:FuzzServeHTTP \
	./codec:FuzzDecode ./artifact:FuzzClosureIndex

.PHONY: test check build demo fuzz

test: check
	$(GO) test -timeout 30m ./...
	$(MAKE) fuzz

# Static checks (conflict markers a merge left, gofmt, vet, staticcheck);
# vet runs for macOS too, since Nix users build there and
# nothing else here would notice a Linux-only call.
check:
	@if git grep -nE '^(<<<<<<<|=======|>>>>>>>)( |$$)' -- . ':!*.go'; then echo "merge conflict markers left"; exit 1; fi
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	GOOS=darwin GOARCH=arm64 $(GO) vet ./...
	@if [ -x "$(STATICCHECK)" ]; then echo "$(STATICCHECK) ./..."; "$(STATICCHECK)" ./...; \
	elif [ "$$NIXOCI_REQUIRE_TOOLS" = 1 ]; then echo "staticcheck not installed"; exit 1; \
	else echo "staticcheck not installed; skipped"; fi

# Each fuzz target for FUZZTIME with its seed corpus (testdata/fuzz);
# run longer with e.g. `make fuzz FUZZTIME=10m`.
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		if ! grep -qs "func $$name(" $$pkg/*_test.go; then echo "no $$name in $$pkg"; exit 1; fi; \
		echo "$(GO) test $$pkg -run '^$$' -fuzz '^'$$name'$$' -fuzztime $(FUZZTIME)"; \
		$(GO) test $$pkg -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) || exit 1; \
	done

build:
	$(GO) build -o bin/nixoci ./cmd/nixoci

# The main job end to end on the embedded default store: build a small
# closure with Nix, push it, pull it back as a binary cache, substitute
# from it into a fresh store.
demo: build
	./scripts/demo.sh
