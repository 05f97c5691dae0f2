package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/spec"
)

// TestInspectShowsSystems: inspect shows each path's system, in text and
// JSON, counts them, and flags a closure of several.
func TestInspectShowsSystems(t *testing.T) {
	t.Setenv("NIXOCI_STORE", t.TempDir())
	c := fixture.NewCache(t)
	lib := c.Add("lib-1.0", "library", spec.CompressionZstd)
	app := c.Add("app-2.1", "application", spec.CompressionZstd, "lib-1.0")
	layout := "oci:" + filepath.Join(t.TempDir(), "l")
	mustRun(t, "push", "--to", layout+":one", "--from-cache", c.URL(), app.StorePath)

	out := mustRun(t, "inspect", layout+":one")
	if !strings.Contains(out, "systems  x86_64-linux 2\n") || strings.Count(out, "zstd         x86_64-linux  -") != 2 || strings.Contains(out, "mixed") {
		t.Errorf("inspect of an x86_64-linux closure:\n%s", out)
	}
	var s artifact.ClosureSummary
	if err := json.Unmarshal([]byte(mustRun(t, "inspect", "--json", layout+":one")), &s); err != nil {
		t.Fatal(err)
	}
	for _, p := range s.Paths {
		if p.System != "x86_64-linux" {
			t.Errorf("JSON: %s has system %q", p.StorePath, p.System)
		}
	}

	// The library rebuilt for aarch64: an image of it would be neither.
	lib.System = "aarch64-linux"
	c.WriteInfo(lib)
	mustRun(t, "push", "--to", layout+"2:mixed", "--from-cache", c.URL(), app.StorePath)
	out = mustRun(t, "inspect", layout+"2:mixed")
	if !strings.Contains(out, "systems  aarch64-linux 1, x86_64-linux 1 (mixed: an image of it needs --platform)\n") {
		t.Errorf("inspect of a closure of two systems:\n%s", out)
	}
}
