# One store path holding a single 1 GiB file, for peak-memory measurements.
# Its content is the Go toolchain's binaries repeated: compressible like
# real binaries, unlike random bytes.
{ goroot ? "/usr/local/go" }:
derivation {
  name = "bench-one-gib-file";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  PATH = "/usr/bin:/bin";
  args = [ "-c" ''
    mkdir $out
    # The loop ends when head has enough and cat fails writing to the pipe.
    while cat ${goroot}/bin/go ${goroot}/pkg/tool/*/compile ${goroot}/pkg/tool/*/link; do :; done | head -c 1073741824 > $out/blob
  '' ];
}
