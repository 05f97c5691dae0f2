#!/usr/bin/env bash
# Image benchmark, side by side in one run: `nixoci image` from stored
# artifacts versus `tar -c | gzip` of the same store paths (the floor a
# user would compare with), and rebuilding after a one-path change.
# Usage: bench/image.sh   (as root, Nix installed)
set -euo pipefail
cd "$(dirname "$0")/.."
export NIX_CONFIG="${NIX_CONFIG:-}"$'\nexperimental-features = nix-command\nbuild-users-group =\nsubstituters =\nsandbox = false'
go build -o bin/nixoci ./cmd/nixoci
NIXOCI=$PWD/bin/nixoci
work=$(mktemp -d /tmp/nixoci-bench-image.XXXXXX)
trap 'rm -rf "$work"' EXIT

root=$(nix-build bench/go-closure.nix --no-out-link)
root2=$(nix-build bench/go-closure.nix --no-out-link --argstr revision 2)
closure=$(nix-store --query --requisites "$root")
changed=$(comm -13 <(nix-store -qR "$root" | sort) <(nix-store -qR "$root2" | sort) | wc -l)
narsize=$(nix path-info --json $closure | tr ',' '\n' | sed -n 's/.*"narSize":\([0-9]*\).*/\1/p' | paste -sd+ | bc)
"$NIXOCI" push --to "oci:$work/l:go" $root >/dev/null 2>&1
"$NIXOCI" push --to "oci:$work/l:go2" $root2 >/dev/null 2>&1
tar -cf - $closure 2>/dev/null | cat > /dev/null # warm the page cache

timed() { /usr/bin/time -o "$work/t" -f '%e' "$@" > "$work/out" 2> "$work/err" || { cat "$work/err"; exit 1; }; cat "$work/t"; }
t_tar=$(timed sh -c "tar -cf - $(echo $closure) 2>/dev/null | gzip -6 > $work/closure.tar.gz")
t_img=$(timed "$NIXOCI" image --from "oci:$work/l:go" --to "oci:$work/l:img" --entrypoint $root/bin/go)
grep -q "0 reused" "$work/err" || { echo "first image reused layers:"; cat "$work/err"; exit 1; }
t_img2=$(timed "$NIXOCI" image --from "oci:$work/l:go2" --to "oci:$work/l:img2" --entrypoint $root2/bin/go)
conv2=$(sed -n 's/.*(\([0-9]*\) converted.*/\1/p' "$work/err")
t_zstd=$(timed "$NIXOCI" image --from "oci:$work/l:go" --to "oci:$work/l:imgz" --compression zstd)

r() { echo "scale=2; $1 / $2" | bc; }
cat <<EOT
Closure: $(echo "$closure" | wc -l) store paths, $(echo "scale=1; $narsize/1000000" | bc) MB of NAR (bench/go-closure.nix), stored zstd. $(nproc) cores.

| what | wall s | vs \`tar -c \| gzip -6\` |
|---|---|---|
| \`tar -c PATHS \| gzip -6\` | $t_tar | 1 |
| \`nixoci image\` (gzip layers, all converted) | $t_img | **$(r $t_img $t_tar)×** |
| \`nixoci image\` (zstd layers, all converted) | $t_zstd | $(r $t_zstd $t_tar)× |
| \`nixoci image\` after a one-path change ($changed changed path, $conv2 converted) | $t_img2 | **$(echo "scale=1; 100 * $t_img2 / $t_img" | bc)% of the first build** |
EOT
