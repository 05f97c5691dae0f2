package testenv

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// CredentialHelper is a docker credential helper (a program named
// docker-credential-NAME speaking the docker-credential-helpers protocol)
// written as a shell script, as `docker login` with credsStore or
// credHelpers would run it.
type CredentialHelper struct {
	Name string // NAME, as used in credsStore and credHelpers
	Dir  string // holds docker-credential-NAME: put it first in PATH
	Log  string // one line "ACTION SERVER" per call
}

// NewCredentialHelper writes docker-credential-NAME into a fresh dir: its
// "get" answers host (a "host:port" registry address) with user and
// password, and any other server with "credentials not found in native
// keychain" (exit 1), as the real helpers do; other actions fail.
func NewCredentialHelper(t testing.TB, name, host, user, password string) *CredentialHelper {
	t.Helper()
	if err := checkName(name); err != nil {
		t.Fatalf("NewCredentialHelper: bad name %q: %v", name, err)
	}
	dir := t.TempDir()
	h := &CredentialHelper{Name: name, Dir: dir, Log: filepath.Join(dir, "calls.log")}
	answer, _ := json.Marshal(map[string]string{"ServerURL": host, "Username": user, "Secret": password})
	script := fmt.Sprintf(`#!/bin/sh
server=$(cat)
echo "$1 $server" >> %s
if [ "$1" = get ] && [ "$server" = %s ]; then
	printf '%%s\n' %s
	exit 0
fi
echo "credentials not found in native keychain"
exit 1
`, shellQuote(h.Log), shellQuote(host), shellQuote(string(answer)))
	if err := os.WriteFile(filepath.Join(dir, "docker-credential-"+name), []byte(script), 0o755); err != nil {
		t.Fatalf("NewCredentialHelper: %v", err)
	}
	return h
}

// Calls returns the lines of the helper's call log.
func (h *CredentialHelper) Calls(t testing.TB) []string {
	t.Helper()
	data, err := os.ReadFile(h.Log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("CredentialHelper.Calls: %v", err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

// PathEnv returns "PATH=" with h.Dir in front of the current PATH.
func (h *CredentialHelper) PathEnv() string {
	return "PATH=" + h.Dir + string(os.PathListSeparator) + os.Getenv("PATH")
}
