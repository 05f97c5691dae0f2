#!/usr/bin/env bash
# Push benchmark, side by side in one run: nixoci push versus nix copy
# --to file:// on the same closure (bench/go-closure.nix, ~190 MB of NAR),
# plus re-push and peak memory with a single 1 GiB file. Prints a Markdown
# table with ratios. Usage: bench/push.sh   (as root, Nix installed)
set -euo pipefail
cd "$(dirname "$0")/.."
export NIX_CONFIG="${NIX_CONFIG:-}"$'\nexperimental-features = nix-command\nbuild-users-group =\nsubstituters =\nsandbox = false'
go build -o bin/nixoci ./cmd/nixoci
NIXOCI=$PWD/bin/nixoci
work=$(mktemp -d /tmp/nixoci-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

root=$(nix-build bench/go-closure.nix --no-out-link)
closure=$(nix-store --query --requisites "$root")
narsize=$(nix path-info --json $closure | tr ',' '\n' | sed -n 's/.*"narSize":\([0-9]*\).*/\1/p' | paste -sd+ | bc)
# Warm the page cache so every contender reads from memory.
tar -cf - $closure 2>/dev/null | cat > /dev/null

# measure NAME CMD...: wall seconds and peak RSS (KiB) into $secs/$rss
measure() {
  local name=$1; shift
  /usr/bin/time -o "$work/time" -f '%e %M' "$@" > "$work/$name.out" 2> "$work/$name.err" || {
    cat "$work/$name.err"; exit 1; }
  read -r secs rss < <(tail -1 "$work/time")
}
dirsize() { du -sb --apparent-size "$1" | cut -f1; }
blobsize() { # total stored NAR bytes of a closure tag
  "$NIXOCI" inspect --json "$1" | sed -n 's/^  "fileSize": \([0-9]*\).*/\1/p'
}

measure nix-xz nix copy --to "file://$work/nix-xz" $root;                      t_nix_xz=$secs
s_nix_xz=$(dirsize "$work/nix-xz/nar")
measure nix-zstd nix copy --to "file://$work/nix-zstd?compression=zstd" $root; t_nix_zstd=$secs
s_nix_zstd=$(dirsize "$work/nix-zstd/nar")
measure tar-gzip sh -c "tar -cf - $(echo $closure) | gzip -6 > $work/closure.tar.gz"; t_tar=$secs
measure oci-xz "$NIXOCI" push --compression xz --to "oci:$work/l-xz:b" $root;  t_xz=$secs; r_xz=$rss
s_xz=$(blobsize "oci:$work/l-xz:b")
measure oci-zstd "$NIXOCI" push --compression zstd --to "oci:$work/l-zstd:b" $root; t_zstd=$secs; r_zstd=$rss
s_zstd=$(blobsize "oci:$work/l-zstd:b")
measure repush "$NIXOCI" push --compression xz --to "oci:$work/l-xz:b" $root;  t_re=$secs
grep -q "0 packed" "$work/repush.err" || { echo "re-push packed something:"; cat "$work/repush.err"; exit 1; }

big=$(nix-build bench/big-file.nix --no-out-link)
measure big-zstd "$NIXOCI" push --compression zstd --to "oci:$work/big-zstd" $big; t_big_zstd=$secs; r_big_zstd=$rss
measure big-xz "$NIXOCI" push --compression xz --to "oci:$work/big-xz" $big;       t_big_xz=$secs;   r_big_xz=$rss

ratio() { echo "scale=2; $1 / $2" | bc; }
mb() { echo "scale=1; $1 / 1000000" | bc; }
cat <<EOT
Closure: $(echo "$closure" | wc -l) store paths, $(mb $narsize) MB of NAR. $(nproc) cores.

| what | wall s | stored MB | vs nix copy (xz) time | size vs Nix's xz | peak RSS MiB |
|---|---|---|---|---|---|
| \`nix copy --to file://\` (xz, Nix default) | $t_nix_xz | $(mb $s_nix_xz) | 1 | 1 | |
| \`nix copy --to file://?compression=zstd\` | $t_nix_zstd | $(mb $s_nix_zstd) | $(ratio $t_nix_xz $t_nix_zstd)× faster | $(ratio $s_nix_zstd $s_nix_xz) | |
| \`tar -c | gzip -6\` | $t_tar | $(mb $(stat -c %s $work/closure.tar.gz)) | $(ratio $t_nix_xz $t_tar)× faster | | |
| \`nixoci push --compression xz\` | $t_xz | $(mb $s_xz) | **$(ratio $t_nix_xz $t_xz)× faster** | **$(ratio $s_xz $s_nix_xz)** | $((r_xz/1024)) |
| \`nixoci push --compression zstd\` | $t_zstd | $(mb $s_zstd) | **$(ratio $t_nix_xz $t_zstd)× faster** | $(ratio $s_zstd $s_nix_xz) | $((r_zstd/1024)) |
| \`nixoci push\` again (all stored) | $t_re | | re-push = $(echo "scale=1; 100 * $t_re / $t_xz" | bc)% of first push | | |
| \`nixoci push --compression zstd\`, one 1 GiB file | $t_big_zstd | | | | **$((r_big_zstd/1024))** |
| \`nixoci push --compression xz\`, one 1 GiB file | $t_big_xz | | | | **$((r_big_xz/1024))** |
EOT
