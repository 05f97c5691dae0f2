# A small closure for the demo: a static busybox, some data, and a script
# that references both. Builds without network (builder is /bin/sh).
let
  drv = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
    PATH = "/usr/bin:/bin";
  };
  busybox = drv "demo-busybox" "mkdir -p $out/bin && cp /bin/busybox $out/bin/busybox && ln -s busybox $out/bin/sh";
  data = drv "demo-greeting" "mkdir -p $out/share && echo 'hello from a registry-backed Nix cache' > $out/share/greeting";
in drv "demo-hello" ''
  mkdir -p $out/bin
  printf '#!${busybox}/bin/sh\nexec ${busybox}/bin/busybox cat ${data}/share/greeting\n' > $out/bin/hello
  chmod +x $out/bin/hello
''
