// Command nixoci keeps Nix store paths as artifacts in OCI registries and
// image-layout directories. It is a thin layer over the nixoci packages:
// each subcommand parses its flags and calls one library function.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
)

// defaultMemoryLimit is the Go heap's soft limit unless GOMEMLIMIT is set.
const defaultMemoryLimit = 512 << 20

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"push", "store the closures of store paths", runPush},
		{"pull", "write a stored closure as a Nix binary cache directory", runPull},
		{"inspect", "show the store paths of a stored closure", runInspect},
		{"copy", "copy a closure or image between targets, ready to serve", runCopy},
		{"image", "make a runnable OCI image of a stored closure", runImage},
		{"serve", "serve the Nix binary-cache protocol from stored artifacts", runServe},
		{"rm", "remove closure and image tags", runRm},
		{"gc", "delete what no closure or image needs", runGC},
		{"version", "print the version", runVersion},
	}
}

const usageText = `nixoci keeps Nix store paths as artifacts in any OCI registry.

Usage:
  nixoci <command> [flags] [arguments]

Commands:
%s
Targets:
  oci:DIR              an OCI image-layout directory (the default is
                       oci:$NIXOCI_STORE, or oci:~/.local/share/nixoci/store)
  HOST[:PORT]/REPO     a repository in an OCI registry; credentials come from
                       the docker config file (docker login / oras login);
                       loopback registries are spoken to over plain HTTP
  Append :TAG (or @sha256:…) to name a closure.
  TAG, :TAG            a closure in the default store (a name with neither
                       '/' nor ':' is a tag: 'nixoci push ./result' then
                       'nixoci inspect hello-2.12')

Environment:
  NIXOCI_STORE         the default layout directory (see Targets)
  NIXOCI_TIMEOUT       how long a registry request may make no progress
                       before it is cut and retried (default 60s)
  NIXOCI_REGISTRY_USERNAME, NIXOCI_REGISTRY_PASSWORD
                       registry credentials for serve, where a service
                       has no docker config
  NIXOCI_DEBUG=1       debug logs (retries, prefetches, gc batches)
  NIXOCI_CPUPROFILE=F  write a CPU profile of the command to F (go tool pprof)
  GOMEMLIMIT           the Go heap's soft limit (default 512MiB)

Run 'nixoci <command> --help' for a command's flags and examples.
`

func usage(w io.Writer) {
	var list string
	for _, c := range commands() {
		list += fmt.Sprintf("  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, usageText, list)
}

// errUsage marks errors in how nixoci was called (exit status 2).
var errUsage = errors.New("usage error")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()})))
	if os.Getenv("GOMEMLIMIT") == "" {
		// A soft limit keeps the heap near what is live instead of twice
		// that: xz encoders allocate several times their 32 MiB dictionary
		// per chunk, and garbage from finished chunks would otherwise pile
		// up. Set GOMEMLIMIT to change it.
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	stopProfile := startCPUProfile()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stopProfile()
	os.Exit(code)
}

// startCPUProfile writes a CPU profile of the whole command to the file
// NIXOCI_CPUPROFILE names (for `go tool pprof`), if set; a command that
// cannot is run anyway, with a warning.
func startCPUProfile() (stop func()) {
	name := os.Getenv("NIXOCI_CPUPROFILE")
	if name == "" {
		return func() {}
	}
	f, err := os.Create(name)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		slog.Warn("no CPU profile", "NIXOCI_CPUPROFILE", name, "err", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

func logLevel() slog.Level {
	if os.Getenv("NIXOCI_DEBUG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		if len(args) > 1 {
			return run(ctx, []string{args[1], "--help"}, stdout, stderr)
		}
		usage(stdout)
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			err := c.run(ctx, args[1:], stdout, stderr)
			switch {
			case err == nil:
				return 0
			case errors.Is(err, errHelp):
				return 0
			case errors.Is(err, errUsage):
				fmt.Fprintf(stderr, "nixoci %s: %v\nRun 'nixoci %s --help' for usage.\n", c.name, err, c.name)
				return 2
			default:
				fmt.Fprintf(stderr, "nixoci %s: %v\n", c.name, err)
				return 1
			}
		}
	}
	fmt.Fprintf(stderr, "nixoci: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func runVersion(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fmt.Fprintf(stdout, "nixoci %s\n", version)
	return nil
}
