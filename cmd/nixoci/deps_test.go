package main

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/internal/testenv"
)

// TestOnlyCLIAndRegistryBuildImages: package image (building runnable
// images) is imported by the CLI and the image registry only, so the
// binary-cache server, the shared serving code and the artifact packages
// stay free of it. It reads every package's transitive imports from
// `go list`.
func TestOnlyCLIAndRegistryBuildImages(t *testing.T) {
	const (
		module = "github.com/nixoci/nixoci"
		image  = module + "/image"
	)
	allowed := []string{module + "/cmd/nixoci", module + "/imageregistry", image}
	cmd := exec.Command(testenv.Tool(t, "go"), "list", "-json=ImportPath,Deps", module+"/...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for {
		var p struct {
			ImportPath string
			Deps       []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		seen++
		if slices.Contains(p.Deps, image) && !slices.Contains(allowed, p.ImportPath) {
			t.Errorf("%s depends on %s", p.ImportPath, image)
		}
	}
	if seen < len(allowed)+3 {
		t.Fatalf("go list listed %d packages; is the module root at ../..?", seen)
	}
}
