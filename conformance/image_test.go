package conformance

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// runImage unpacks an image from a layout with umoci and runs it with
// runc, returning what the container printed.
func runImage(t *testing.T, layoutDir, tag string) string {
	t.Helper()
	testenv.Tool(t, "runc")
	bundle := filepath.Join(t.TempDir(), "bundle")
	testenv.Run(t, "umoci", "unpack", "--image", layoutDir+":"+tag, bundle)
	cfgPath := filepath.Join(bundle, "config.json")
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["process"].(map[string]any)["terminal"] = false // no TTY in tests
	data, _ = json.Marshal(cfg)
	os.WriteFile(cfgPath, data, 0o644)
	id := fmt.Sprintf("nixoci-test-%d", os.Getpid())
	return testenv.Run(t, "runc", "run", "--bundle", bundle, id+"-"+filepath.Base(t.TempDir()))
}

// imageManifest reads an image manifest from a layout with oras.
func imageManifest(t *testing.T, layoutDir, ref string) ocispec.Manifest {
	t.Helper()
	var m ocispec.Manifest
	if err := json.Unmarshal([]byte(oras(t, "manifest", "fetch", "--oci-layout", layoutDir+ref)), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// layerEntries lists the entries of a gzip layer blob in a layout.
func layerEntries(t *testing.T, layoutDir string, d ocispec.Descriptor) []*tar.Header {
	t.Helper()
	var out []*tar.Header
	for _, e := range layerEntriesWithData(t, layoutDir, d) {
		out = append(out, e.hdr)
	}
	return out
}

// TestImageRuns: an image of a fixture closure runs with umoci + runc,
// from a layout and after a round trip through a registry with skopeo.
func TestImageRuns(t *testing.T) {
	fx := testenv.BuildFixture(t, "image")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	layoutDir := filepath.Join(t.TempDir(), "l")
	layout := "oci:" + layoutDir
	run(t, "push", "--to", layout+":closure", fx.App)
	run(t, "image", "--from", layout+":closure", "--to", layout+":img",
		"--entrypoint", fx.App+"/bin/app", "--link-root", fx.Busybox)
	if got := runImage(t, layoutDir, "img"); got+"\n" != fx.Message {
		t.Errorf("container printed %q, want %q", got, fx.Message)
	}

	// Layers carry the store path and its NAR artifact; skopeo sees them.
	m := imageManifest(t, layoutDir, ":img")
	if len(m.Layers) != len(fx.Closure)+1 {
		t.Fatalf("%d layers, want %d store paths + root", len(m.Layers), len(fx.Closure))
	}
	for i, p := range fx.Closure {
		a := m.Layers[i].Annotations
		manifest := oras(t, "manifest", "fetch", "--oci-layout", layoutDir+":"+spec.PathTag(p), "--descriptor")
		if a[spec.AnnotationStorePath] != p || !strings.Contains(manifest, a[spec.AnnotationPathManifest]) {
			t.Errorf("layer %d annotations %v do not name %s and its manifest", i, a, p)
		}
	}
	inspect := testenv.Run(t, "skopeo", "inspect", "--raw", "oci:"+layoutDir+":img")
	mustContain(t, "skopeo inspect", inspect, spec.AnnotationStorePath, fx.Busybox)

	// Through a real registry, fetched by skopeo.
	ref := reg.Ref("images/fx")
	run(t, "image", "--from", layout+":closure", "--to", ref+":v1",
		"--entrypoint", fx.App+"/bin/app", "--link-root", fx.Busybox)
	fetched := filepath.Join(t.TempDir(), "fetched")
	testenv.Run(t, "skopeo", "copy", "--src-tls-verify=false", "docker://"+ref+":v1", "oci:"+fetched+":v1")
	if got := runImage(t, fetched, "v1"); got+"\n" != fx.Message {
		t.Errorf("after the registry round trip the container printed %q", got)
	}
	regInspect := testenv.Run(t, "skopeo", "inspect", "--tls-verify=false", "docker://"+ref+":v1")
	mustContain(t, "skopeo inspect of the registry image", regInspect, "Layers", "amd64")

	// crane config shows one history entry per layer, naming its store
	// path (the root layer its role), without a time.
	var cfg ocispec.Image
	if err := json.Unmarshal([]byte(testenv.Run(t, "crane", "config", "--insecure", ref+":v1")), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.History) != len(m.Layers) {
		t.Fatalf("crane config: %d history entries for %d layers", len(cfg.History), len(m.Layers))
	}
	for i, h := range cfg.History {
		want := "nixoci: store path " + m.Layers[i].Annotations[spec.AnnotationStorePath]
		if i == len(cfg.History)-1 {
			want = "nixoci: root filesystem: "
		}
		if !strings.HasPrefix(h.CreatedBy, want) || h.Created != nil || h.EmptyLayer {
			t.Errorf("crane config: history %d is %+v, want %q…, no time", i, h, want)
		}
	}
}

// TestImageReproducibleAndDisjoint: the same image built on fresh targets
// at different parallelism has the same digest; no file is in two layers;
// unpacking the layers in reverse order gives the same tree.
func TestImageReproducibleAndDisjoint(t *testing.T) {
	fx := testenv.BuildFixture(t, "imagerepro")
	var digests []string
	var layoutDir string
	for _, jobs := range []string{"1", "8"} {
		layoutDir = filepath.Join(t.TempDir(), "l")
		run(t, "push", "--to", "oci:"+layoutDir+":c", "--jobs", jobs, fx.App)
		out := run(t, "image", "--from", "oci:"+layoutDir+":c", "--to", "oci:"+layoutDir+":img", "--jobs", jobs,
			"--entrypoint", "/bin/sh", "--link-root", fx.Busybox)
		digests = append(digests, lastLine(out))
	}
	if digests[0] != digests[1] {
		t.Errorf("image digests differ between builds: %v", digests)
	}

	m := imageManifest(t, layoutDir, ":img")
	owner := map[string]int{}
	shared := map[string]bool{"nix/": true, "nix/store/": true}
	for i, l := range m.Layers {
		for _, h := range layerEntries(t, layoutDir, l) {
			if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.ModTime.Unix() > 1 {
				t.Errorf("layer %d: %s has metadata uid=%d gid=%d uname=%q mtime=%v", i, h.Name, h.Uid, h.Gid, h.Uname, h.ModTime)
			}
			if shared[h.Name] {
				continue
			}
			if j, ok := owner[h.Name]; ok {
				t.Errorf("%s is in layers %d and %d", h.Name, j, i)
			}
			owner[h.Name] = i
		}
	}
	if len(owner) < 10 {
		t.Fatalf("only %d entries in the image", len(owner))
	}

	forward, backward := filepath.Join(t.TempDir(), "f"), filepath.Join(t.TempDir(), "b")
	for i := range m.Layers {
		extractLayer(t, layoutDir, m.Layers[i], forward)
		extractLayer(t, layoutDir, m.Layers[len(m.Layers)-1-i], backward)
	}
	testenv.TreesEqual(t, forward, backward)
	testenv.TreesEqual(t, fx.App, filepath.Join(forward, fx.App))
}

// extractLayer unpacks a layer into dir (a plain, test-only extractor:
// the names come from our own layers, already checked disjoint).
func extractLayer(t *testing.T, layoutDir string, d ocispec.Descriptor, dir string) {
	t.Helper()
	for _, h := range layerEntriesWithData(t, layoutDir, d) {
		p := filepath.Join(dir, h.hdr.Name)
		switch h.hdr.Typeflag {
		case tar.TypeDir:
			os.MkdirAll(p, 0o755)
		case tar.TypeSymlink:
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.Symlink(h.hdr.Linkname, p)
		case tar.TypeReg:
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, h.data, os.FileMode(h.hdr.Mode)&0o777|0o200)
		}
	}
}

type entryWithData struct {
	hdr  *tar.Header
	data []byte
}

// layerEntriesWithData lists the entries of a gzip layer blob in a
// layout, with their contents.
func layerEntriesWithData(t *testing.T, layoutDir string, d ocispec.Descriptor) []entryWithData {
	t.Helper()
	f, err := os.Open(filepath.Join(layoutDir, "blobs", "sha256", d.Digest.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("layer %s: %v", d.Digest, err)
	}
	tr := tar.NewReader(gz)
	var out []entryWithData
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err == nil {
			var data []byte
			data, err = io.ReadAll(tr)
			out = append(out, entryWithData{h, data})
		}
		if err != nil {
			t.Fatalf("layer %s: %v", d.Digest, err)
		}
	}
}

// TestImageReusesLayers: an image of a closure that differs from an
// earlier one in a single path converts exactly that path.
func TestImageReusesLayers(t *testing.T) {
	fx := testenv.BuildFixture(t, "imagereuse")
	app2 := testenv.BuildDerivation(t, "fx-app2-imagereuse",
		`mkdir -p $out/bin; printf '#!%s/bin/sh\n%s/bin/busybox cat %s/share/msg\n' $ref0 $ref0 $ref1 > $out/bin/app; chmod +x $out/bin/app`,
		fx.Busybox, fx.Data)
	layoutDir := filepath.Join(t.TempDir(), "l")
	layout := "oci:" + layoutDir
	for i, root := range []string{fx.App, app2} {
		run(t, "push", "--to", layout+fmt.Sprintf(":c%d", i), root)
	}
	roots := []string{fx.App, app2}
	build := func(i int) string {
		cmd := nixoci(t, "image", "--from", layout+fmt.Sprintf(":c%d", i), "--to", layout+fmt.Sprintf(":img%d", i),
			"--entrypoint", roots[i]+"/bin/app")
		_, stderr, err := testenv.RunCmdErr(cmd)
		if err != nil {
			t.Fatalf("image: %v\n%s", err, stderr)
		}
		return stderr
	}
	if first := build(0); !strings.Contains(first, "(3 converted, 0 reused") {
		t.Errorf("first image: %s", first)
	}
	if second := build(1); !strings.Contains(second, "(1 converted, 2 reused") {
		t.Errorf("second image should convert only the new path: %s", second)
	}
	if got := runImage(t, layoutDir, "img1"); got+"\n" != fx.Message {
		t.Errorf("second image printed %q, want %q", got, fx.Message)
	}
}

// TestNixSnapshotterImage: the nix-snapshotter form has one mountpoint
// layer as nix-snapshotter documents it, and the paths it names are
// substitutable from nixoci serve.
func TestNixSnapshotterImage(t *testing.T) {
	fx := testenv.BuildFixture(t, "snapshotter")
	key := testenv.GenerateKey(t, "snap-1")
	layoutDir := filepath.Join(t.TempDir(), "l")
	layout := "oci:" + layoutDir
	run(t, "push", "--to", layout+":c", "--sign-key", key.SecretFile, fx.App)
	out := run(t, "image", "--from", layout+":c", "--to", layout+":img", "--nix-snapshotter",
		"--entrypoint", fx.App+"/bin/app")
	mustContain(t, "image output", out, layout+":img-nix")

	m := imageManifest(t, layoutDir, ":img-nix")
	if len(m.Layers) != 2 {
		t.Fatalf("nix-snapshotter image has %d layers, want the nix layer and the root layer", len(m.Layers))
	}
	nixLayer := m.Layers[0]
	if nixLayer.MediaType != ocispec.MediaTypeImageLayerGzip || nixLayer.Annotations[spec.AnnotationNixLayer] != "true" {
		t.Errorf("nix layer %s annotations %v", nixLayer.MediaType, nixLayer.Annotations)
	}
	var named []string
	for i := 0; ; i++ {
		p, ok := nixLayer.Annotations[fmt.Sprintf("%s%d", spec.AnnotationNixStorePathPrefix, i)]
		if !ok {
			break
		}
		named = append(named, p)
	}
	sort.Strings(named)
	if strings.Join(named, " ") != strings.Join(fx.Closure, " ") {
		t.Errorf("nix layer names %v, want %v", named, fx.Closure)
	}
	want := map[string]bool{"nix/": true, "nix/store/": true}
	for _, p := range fx.Closure {
		want[p[1:]+"/"] = true
	}
	for _, h := range layerEntries(t, layoutDir, nixLayer) {
		if !want[h.Name] {
			t.Errorf("unexpected entry %s in the nix layer", h.Name)
		}
		delete(want, h.Name)
		if h.Typeflag != tar.TypeDir || h.Mode != 0o755 || h.ModTime.Unix() != 0 || h.Uid != 0 || h.Size != 0 {
			t.Errorf("%s: type %c mode %o mtime %d uid %d size %d; want an empty 0755 directory, mtime 0", h.Name, h.Typeflag, h.Mode, h.ModTime.Unix(), h.Uid, h.Size)
		}
	}
	if len(want) > 0 {
		t.Errorf("nix layer lacks %v", want)
	}

	// The node's Nix gets the named paths from nixoci serve.
	srv := startServe(t, nil, "--from", layout)
	for _, p := range named {
		if _, stderr, err := realise(t, srv.URL, key.Public, p); err != nil {
			t.Errorf("realise %s through serve: %v\n%s", p, err, stderr)
		}
	}
}

// TestImageBadInput: a closure tag that does not exist, an entrypoint
// outside the closure and a NAR that would escape its layer are clear
// errors, and no image tag is written.
func TestImageBadInput(t *testing.T) {
	fx := testenv.BuildFixture(t, "imagebad")
	layoutDir := filepath.Join(t.TempDir(), "l")
	layout := "oci:" + layoutDir
	run(t, "push", "--to", layout+":c", fx.App)

	stderr, _ := runFail(t, "image", "--from", layout+":no-such-closure", "--to", layout+":img")
	mustContain(t, "missing closure", stderr, "no-such-closure", "not found")
	stderr, _ = runFail(t, "image", "--from", layout+":c", "--to", layout+":img", "--entrypoint", "/usr/bin/env")
	mustContain(t, "entrypoint outside the closure", stderr, "/usr/bin/env", "not in the closure")
	stderr, _ = runFail(t, "image", "--from", layout+":c", "--to", layout+":img", "--link-root", "/nix/store/00000000000000000000000000000000-x")
	mustContain(t, "link root outside the closure", stderr, "not in the closure")

	// A store path whose NAR holds an entry named "..", written straight
	// into the layout with the library (push itself refuses such NARs).
	evil := synthStorePath("evil")
	bad := narTokens("nix-archive-1", "(", "type", "directory",
		"entry", "(", "name", "..", "node", "(", "type", "regular", "contents", "escaped", ")", ")", ")")
	l, err := backend.OpenLayout(layoutDir, false)
	if err != nil {
		t.Fatal(err)
	}
	h := nix32sha256(bad)
	info := &narinfo.NarInfo{StorePath: evil, URL: spec.NarURL(strings.TrimPrefix(h, "sha256:"), spec.CompressionNone),
		Compression: "none", FileHash: h, FileSize: uint64(len(bad)), NarHash: h, NarSize: uint64(len(bad)), References: []string{}}
	ctx := context.Background()
	art, err := artifact.StoreArtifact(ctx, l, info, func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(string(bad))), nil })
	if err != nil {
		t.Fatal(err)
	}
	cm, err := artifact.NewClosureManifests([]string{evil}, []artifact.PathArtifact{art}, "/nix/store", 0)
	if err != nil {
		t.Fatal(err)
	}
	l.Push(ctx, cm.CacheInfo.Descriptor, strings.NewReader(string(cm.CacheInfo.Data)))
	if err := l.PushReference(ctx, cm.Top.Descriptor, strings.NewReader(string(cm.Top.Data)), "evil"); err != nil {
		t.Fatal(err)
	}
	stderr, _ = runFail(t, "image", "--from", layout+":evil", "--to", layout+":img")
	mustContain(t, "escaping NAR", stderr, evil, `".."`)
	if contains(layoutTags(t, layoutDir), "img") {
		t.Error("an image tag was written after failures")
	}
}
