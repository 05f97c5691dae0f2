package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// nixConfig is what NixEnv puts in NIX_CONFIG: the nix-command experimental
// feature (for `nix copy` and friends); an empty build-users-group, because
// the tests run Nix as root without a daemon and without nixbld users; no
// sandbox, since fixture builders run the host's /bin/sh (Debian's nix-bin
// does not always install an /etc/nix/nix.conf saying so); and no
// substituters, because there is no network: with the default
// (cache.nixos.org) every build of a new derivation first spends about 5 s
// retrying a host name that cannot resolve. Tests that want a substituter
// pass it on the command line (--option substituters ..., or --from), which
// wins over NIX_CONFIG. Nix's narinfo disk cache is off: it is keyed by the
// cache's URL, and a later test's server on a port an earlier one used
// would otherwise be taken to hold what the earlier one held.
const nixConfig = "experimental-features = nix-command\nbuild-users-group =\nsubstituters =\nsandbox = false\nnarinfo-cache-positive-ttl = 0\nnarinfo-cache-negative-ttl = 0"

// NixEnv returns os.Environ() with NIX_CONFIG set to nixConfig, followed by
// any NIX_CONFIG that was already set (so its settings win). Use it for every
// nix command; Run, RunErr and Cmd use it for every command.
func NixEnv() []string {
	env := os.Environ()
	out := make([]string, 0, len(env)+1)
	cfg := nixConfig
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "NIX_CONFIG="); ok {
			if strings.TrimSpace(v) != "" {
				cfg += "\n" + v
			}
			continue
		}
		out = append(out, kv)
	}
	return append(out, "NIX_CONFIG="+cfg)
}

// Cmd returns an *exec.Cmd for name (resolved with Tool when it contains no
// slash, so a missing program skips the test) with Env set to NixEnv(). Tests
// that need extra environment (DOCKER_CONFIG=...) or a working directory
// adjust the returned command and run it with RunCmd or RunCmdErr.
func Cmd(t testing.TB, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(Tool(t, name), args...)
	cmd.Env = NixEnv()
	return cmd
}

// Run runs a command with NixEnv() and returns its stdout, trimmed of
// surrounding white space. On failure it calls t.Fatalf with the command line,
// the exit status and stderr. The program is resolved with Tool, so a missing
// program skips the test (or fails it under NIXOCI_REQUIRE_TOOLS=1).
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	return RunCmd(t, Cmd(t, name, args...))
}

// RunErr is like Run but returns (stdout, stderr, err) without failing the
// test when the command fails. stdout is trimmed like Run's; stderr is not.
// A missing program is still handled by Tool (skip, or fail when required).
func RunErr(t testing.TB, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return RunCmdErr(Cmd(t, name, args...))
}

// RunCmd runs cmd and returns its trimmed stdout; on failure it calls
// t.Fatalf with the command line, exit status and stderr. cmd.Stdout and
// cmd.Stderr must be unset.
func RunCmd(t testing.TB, cmd *exec.Cmd) string {
	t.Helper()
	stdout, _, err := RunCmdErr(cmd)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return stdout
}

// RunCmdErr runs cmd and returns (trimmed stdout, stderr, err). When err is
// not nil its message names the command line, the exit status and stderr.
func RunCmdErr(cmd *exec.Cmd) (stdout, stderr string, err error) {
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err = cmd.Run()
	stdout, stderr = strings.TrimSpace(so.String()), se.String()
	if err != nil {
		err = &CmdError{Msg: failure(cmd, stdout, stderr, err), Err: err}
	}
	return stdout, stderr, err
}

// CmdError is the error RunErr and RunCmdErr return for a failed command.
// Its message holds the command line, exit status and stderr; Unwrap gives
// the underlying error (an *exec.ExitError when the command ran and failed).
type CmdError struct {
	Msg string
	Err error
}

func (e *CmdError) Error() string { return e.Msg }
func (e *CmdError) Unwrap() error { return e.Err }

func failure(cmd *exec.Cmd, stdout, stderr string, err error) string {
	return failureOut(cmd, stdout, "stderr", stderr, err)
}

// failureOut is failure with a label for the captured output ("stderr", or
// "output" for combined stdout and stderr).
func failureOut(cmd *exec.Cmd, stdout, label, stderr string, err error) string {
	var b strings.Builder
	fmt.Fprintf(&b, "command failed: %s\n", CommandLine(cmd.Args))
	if cmd.Dir != "" {
		fmt.Fprintf(&b, "in directory: %s\n", cmd.Dir)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		fmt.Fprintf(&b, "%s\n", ee.ProcessState) // "exit status N" or "signal: ..."
	} else {
		fmt.Fprintf(&b, "error: %v\n", err)
	}
	if s := strings.TrimRight(stderr, "\n"); s != "" {
		fmt.Fprintf(&b, "%s:\n%s\n", label, s)
	} else {
		fmt.Fprintf(&b, "%s: (empty)\n", label)
	}
	if stdout != "" {
		fmt.Fprintf(&b, "stdout:\n%s\n", tail(stdout, 4096))
	}
	return strings.TrimRight(b.String(), "\n")
}

// CommandLine renders args as a shell-like command line for messages.
func CommandLine(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=,+@%", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// tail returns at most the last n bytes of s, marking a cut.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "[... " + fmt.Sprint(len(s)-n) + " bytes cut ...]\n" + s[len(s)-n:]
}
