package testenv

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// DockerConfig writes a docker config.json holding credentials for host
// (a "host:port" registry address, as in Registry.Addr) into a fresh temp dir
// and returns the dir, suitable for DOCKER_CONFIG=dir (oras, skopeo with
// --authfile DIR/config.json, and the docker credential libraries read it).
func DockerConfig(t testing.TB, host, user, password string) string {
	t.Helper()
	cfg := map[string]any{
		"auths": map[string]any{
			host: map[string]string{
				"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + password)),
			},
		},
	}
	return DockerConfigJSON(t, cfg)
}

// DockerConfigJSON writes cfg as config.json into a fresh dir and returns
// the dir, for DOCKER_CONFIG (e.g. {"credsStore": "test"} or
// {"credHelpers": {"127.0.0.1:5000": "test"}}).
func DockerConfigJSON(t testing.TB, cfg map[string]any) string {
	t.Helper()
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatalf("DockerConfigJSON: %v", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), append(data, '\n'), 0o600); err != nil {
		t.Fatalf("DockerConfigJSON: %v", err)
	}
	return dir
}
