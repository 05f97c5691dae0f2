# A benchmark closure of real-world content, about 190 MB of NAR: the Go
# toolchain's binaries, compiled packages and part of its sources, copied
# from /usr/local/go into four store paths, under a small root that refers
# to them. Changing `revision` changes only that root (for measuring
# rebuilds after a one-path change).
{ goroot ? "/usr/local/go", revision ? "1" }:
let
  drv = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
    PATH = "/usr/bin:/bin";
  };
  bin = drv "bench-go-bin" "cp -r ${goroot}/bin $out";
  pkg = drv "bench-go-pkg" "cp -r ${goroot}/pkg $out";
  srcStd = drv "bench-go-src-std" "mkdir $out && cp -r ${goroot}/src/runtime ${goroot}/src/crypto ${goroot}/src/internal $out/";
  srcCmd = drv "bench-go-src-cmd" "mkdir $out && cp -r ${goroot}/src/cmd $out/";
in drv "bench-go-toolchain" ''
  mkdir -p $out/bin
  echo "revision ${revision}: ${bin} ${pkg} ${srcStd} ${srcCmd}" > $out/README
  ln -s ${bin}/bin/go $out/bin/go
''
