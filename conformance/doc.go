// Package conformance tests nixoci against the real components its users
// run: the Nix client (Debian nix-bin), a registry (Debian docker-registry,
// i.e. distribution), the oras CLI, skopeo, umoci and runc. Every test
// starts what it needs itself, builds its fixtures with Nix and checks
// outcomes a user would see. Tests skip when a tool is missing, unless
// NIXOCI_REQUIRE_TOOLS=1 (as in CI), which turns the skip into a failure.
package conformance
