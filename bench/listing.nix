# A store path of 5,000 files in 50 directories, for bench/listing.sh.
derivation {
  name = "bench-listing-5000";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  PATH = "/usr/bin:/bin";
  args = [ "-c" ''
    set -e
    for d in $(seq 1 50); do
      mkdir -p $out/share/dir-$d
      for f in $(seq 1 100); do echo "file $d $f" > $out/share/dir-$d/file-$f.txt; done
    done
  '' ];
}
