package imageregistry_test

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/imageregistry"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/internal/serving"
	"github.com/nixoci/nixoci/spec"
)

// TestRegistryIndex: a name whose closures are of two systems, listed by
// a names entry or as components, is an image index whose entries are
// served by digest; a single-system name stays a plain manifest; names
// whose systems do not fit are NAME_INVALID, saying why.
func TestRegistryIndex(t *testing.T) {
	l := fixture.Layout(t)
	fixture.SystemClosure(t, l, "hello-x86", fixture.SystemPath{Name: "hello-x86", System: "x86_64-linux"}, fixture.SystemPath{Name: "data"})
	fixture.SystemClosure(t, l, "hello-arm", fixture.SystemPath{Name: "hello-arm", System: "aarch64-linux"}, fixture.SystemPath{Name: "data"})
	fixture.SystemClosure(t, l, "mixed", fixture.SystemPath{Name: "mixed", System: "x86_64-linux"}, fixture.SystemPath{Name: "arm-lib", System: "aarch64-linux"})
	fixture.SystemClosure(t, l, "nosys", fixture.SystemPath{Name: "nosys"})
	b, err := serving.NewBackends([]serving.Backend{{Name: "backend0", Target: l}}, serving.BackendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g, err := imageregistry.New(imageregistry.Options{
		Backends: b, Logger: slog.New(slog.DiscardHandler),
		Names: map[string]imageregistry.NameSpec{"hello": {Closures: []string{"hello-x86", "hello-arm"}, Entrypoint: []string{"/bin/run"}}},
	})
	if err != nil {
		t.Fatal(err)
	}

	var digests []string
	for _, name := range []string{"hello", "hello-arm/hello-x86"} {
		rec := serve(t, g, "GET", "/v2/"+name+"/manifests/latest")
		if rec.Code != 200 || rec.Header().Get("Content-Type") != ocispec.MediaTypeImageIndex {
			t.Fatalf("%s: %d %s, want an image index\n%s", name, rec.Code, rec.Header().Get("Content-Type"), rec.Body)
		}
		var idx ocispec.Index
		if err := json.Unmarshal(rec.Body.Bytes(), &idx); err != nil {
			t.Fatal(err)
		}
		var platforms []string
		for _, m := range idx.Manifests {
			platforms = append(platforms, spec.PlatformString(*m.Platform))
			one := serve(t, g, "GET", "/v2/"+name+"/manifests/"+m.Digest.String())
			var im ocispec.Manifest
			if one.Code != 200 || json.Unmarshal(one.Body.Bytes(), &im) != nil || len(im.Layers) != 3 {
				t.Errorf("%s: %s image %s: %d, %d layers, want 200 and 3 layers", name, platforms[len(platforms)-1], m.Digest, one.Code, len(im.Layers))
			}
		}
		if strings.Join(platforms, " ") != "linux/amd64 linux/arm64" {
			t.Errorf("%s: platforms %v", name, platforms)
		}
		digests = append(digests, rec.Header().Get("Docker-Content-Digest"))
	}
	if digests[0] == digests[1] {
		t.Error("the names entry (with an entrypoint) and the bare components gave the same index")
	}

	rec := serve(t, g, "GET", "/v2/hello-x86/manifests/latest")
	if rec.Code != 200 || rec.Header().Get("Content-Type") != ocispec.MediaTypeImageManifest {
		t.Errorf("single-system name: %d %s, want an image manifest", rec.Code, rec.Header().Get("Content-Type"))
	}
	for _, tc := range []struct{ name, want string }{
		{"mixed", "paths record different systems"},
		{"hello/nosys", "closure nosys: no path records its system"},
	} {
		rec := serve(t, g, "GET", "/v2/"+tc.name+"/manifests/latest")
		if rec.Code != 400 || errorCode(rec.Body.Bytes()) != "NAME_INVALID" || !strings.Contains(rec.Body.String(), tc.want) {
			t.Errorf("%s: %d %s, want 400 NAME_INVALID saying %q", tc.name, rec.Code, rec.Body, tc.want)
		}
	}
}
