# A closure of n+1 store paths built by n+1 derivations (so each has its
# .drv in the store, as paths built locally do): n small outputs and a
# root referring to all of them. For measuring what reading each path's
# deriver costs a push.
{ n ? 500 }:
let
  drv = name: script: env: derivation ({
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
    PATH = "/usr/bin:/bin";
  } // env);
  leaves = builtins.genList (i: drv "bench-drv-${toString i}" "echo leaf ${toString i} > $out" { }) n;
in drv "bench-drv-root" "echo $leaves > $out" { inherit leaves; }
