#!/usr/bin/env bash
# The main job end to end on the embedded default store (an OCI image-layout
# directory; no registry needed): build a small closure with Nix, push it
# signed, pull it back as a binary cache, and substitute it into a fresh
# Nix store with the key trusted.
set -euo pipefail
cd "$(dirname "$0")/.."
export NIX_CONFIG="${NIX_CONFIG:-}"$'\nexperimental-features = nix-command\nbuild-users-group =\nsubstituters =\nsandbox = false'
NIXOCI=${NIXOCI:-./bin/nixoci}
work=$(mktemp -d /tmp/nixoci-demo.XXXXXX)
export NIXOCI_STORE=${NIXOCI_STORE:-$work/store}
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "build a closure with Nix"
root=$(nix-build scripts/demo.nix --no-out-link)
nix-store --query --requisites "$root"

step "make a signing key"
nix-store --generate-binary-cache-key demo-1 "$work/sec.key" "$work/pub.key"

step "push it to the default store (oci:$NIXOCI_STORE)"
$NIXOCI push --tag demo --sign-key "$work/sec.key" "$root"
$NIXOCI inspect "oci:$NIXOCI_STORE:demo"

step "pull it back as a Nix binary cache"
$NIXOCI pull "oci:$NIXOCI_STORE:demo" --to "$work/cache"
ls "$work/cache"

step "substitute from it into a fresh store, trusting only the demo key"
nix copy --from "file://$work/cache" --to "$work/fresh" \
  --option trusted-public-keys "$(cat "$work/pub.key")" "$root"
for p in $(nix-store --query --requisites "$root"); do
  diff -r "$p" "$work/fresh$p"
done
echo "the fresh store holds the same closure; its script prints:"
"$work/fresh$root/bin/hello" 2>/dev/null || "$root/bin/hello"
step "done; everything is under $work"
