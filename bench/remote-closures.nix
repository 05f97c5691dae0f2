# Closures for bench/remote.sh, made at evaluation time (builtins.toFile,
# no builds): every path holds `kb` kilobytes of distinct hex text and the
# store paths it refers to.
#   chain: n paths, each referring to the one before (one long chain).
#   dag:   `levels` levels of `width` paths; each refers to three paths of
#          the level below; a root refers to the top level (like a system
#          closure: wide, shallow).
{ shape ? "dag", n ? 332, levels ? 10, width ? 15, kb ? 50, seed ? "1" }:
let
  mod = a: b: a - (a / b) * b;
  filler = name:
    let block = i: builtins.hashString "sha256" "${seed}-${name}-${toString i}";
    in builtins.concatStringsSep "\n" (builtins.genList block (kb * 1024 / 65));
  file = name: refs: builtins.toFile name (builtins.concatStringsSep "\n" (refs ++ [ (filler name) ]));
  chain = builtins.foldl' (prev: i: file "chain-${toString i}" (if prev == null then [] else [ "${prev}" ])) null (builtins.genList (i: i) n);
  level = l: below: builtins.genList (i:
    file "dag-${toString l}-${toString i}"
      (if below == [] then [] else map (k: "${builtins.elemAt below (mod (i * 7 + k) (builtins.length below))}") [ 0 1 2 ]))
    width;
  levelsList = builtins.foldl' (acc: l: acc ++ [ (level l (if acc == [] then [] else builtins.elemAt acc (builtins.length acc - 1))) ]) [] (builtins.genList (l: l) levels);
  dag = file "dag-root" (map (p: "${p}") (builtins.elemAt levelsList (levels - 1)));
in if shape == "chain" then chain else dag
