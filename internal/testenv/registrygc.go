package testenv

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// GarbageCollect runs the registry's own garbage collection, which frees
// the blobs no manifest references: it stops the registry (distribution
// wants it stopped or read-only meanwhile), runs `garbage-collect` with
// args on its configuration, and starts it again. It returns what the
// command printed.
func (r *Registry) GarbageCollect(args ...string) string {
	r.t.Helper()
	r.Stop()
	cmd := Cmd(r.t, r.exe, append(append([]string{"garbage-collect"}, args...), r.ConfigFile)...)
	out, stderr, err := RunCmdErr(cmd)
	r.Start()
	if err != nil {
		r.t.Fatalf("%s: %v\n%s", CommandLine(cmd.Args), err, stderr)
	}
	return out + stderr
}

// BlobBytes is the size of the registry's blob store: every blob and
// manifest it holds, referenced or not.
func (r *Registry) BlobBytes() int64 {
	r.t.Helper()
	var n int64
	err := filepath.WalkDir(filepath.Join(r.Dir, "docker", "registry", "v2", "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	if err != nil && !os.IsNotExist(err) {
		r.t.Fatalf("Registry.BlobBytes: %v", err)
	}
	return n
}

// SetDeletes restarts the registry with manifest deletes allowed or not
// (storage.delete.enabled); a registry refusing them answers 405
// UNSUPPORTED.
func (r *Registry) SetDeletes(enabled bool) {
	r.t.Helper()
	data, err := os.ReadFile(r.ConfigFile)
	if err != nil {
		r.t.Fatalf("Registry.SetDeletes: %v", err)
	}
	cfg := strings.Replace(string(data), "delete:\n    enabled: true", "delete:\n    enabled: false", 1)
	if enabled {
		cfg = strings.Replace(string(data), "delete:\n    enabled: false", "delete:\n    enabled: true", 1)
	}
	r.Stop()
	if err := os.WriteFile(r.ConfigFile, []byte(cfg), 0o644); err != nil {
		r.t.Fatalf("Registry.SetDeletes: %v", err)
	}
	r.Start()
}
