# A closure of n+1 store paths made at evaluation time (builtins.toFile,
# no builds): n small files, each referring to the previous one, and a
# root referring to all of them. For narinfo lookup benchmarks.
{ n ? 1500 }:
let
  files = builtins.genList (i: builtins.toFile "bench-file-${toString i}" "file ${toString i}\n") n;
in builtins.toFile "bench-many-root" (builtins.concatStringsSep "\n" files)
