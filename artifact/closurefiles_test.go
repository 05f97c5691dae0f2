package artifact_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/realisation"
	"github.com/nixoci/nixoci/spec"
)

// withFiles is a Source that also has a realisation of app and the
// build log of lib's deriver.
type withFiles struct {
	artifact.Source
	drvHash string
}

func (s withFiles) Files(_ context.Context, infos []*narinfo.NarInfo) ([]artifact.ClosureFile, error) {
	hk, _ := realisation.ParseHashKey(s.drvHash + "!out")
	pk, _ := realisation.NewPathKey(baseName("app.drv"), "out")
	rl := &artifact.Realisation{OutPath: storePath("app"), Output: "out",
		HashKey: &hk, V1: &realisation.V1{Key: hk, OutPath: baseName("app"), Dependent: map[string]string{}},
		PathKey: &pk, V2: &realisation.V2{OutPath: baseName("app")}}
	log := artifact.NewLogArtifact(storePath("lib.drv"), artifact.BytesFile("log/"+baseName("lib.drv"), spec.MediaTypeLog, []byte("building lib\n")))
	return []artifact.ClosureFile{{StorePath: storePath("app"), Realisation: rl}, {StorePath: storePath("lib"), Artifact: log}}, nil
}

// TestPushClosureFiles: SPEC.md section 12.6. A source's realisation
// and log are stored under their tags (the realisation signed by the
// push's key in both layouts) and listed by a closure-files index after
// the paths; pull writes them where `nix copy --to file://` does; a
// second push stores the same closure; a file of a path outside the
// closure is refused.
func TestPushClosureFiles(t *testing.T) {
	c := closureCache(t)
	l := openLayout(t)
	ctx := t.Context()
	src := withFiles{Source: openCache(t, c.URL(), nil), drvHash: "sha256:" + strings.Repeat("ab", 32)}
	key := testKey("files-1")
	res := push(t, l, src, artifact.PushOptions{Tag: "app", SignKeys: []narinfo.SecretKey{key}}, storePath("app"))
	if res.Closure.ArtifactType != spec.ArtifactTypeClosureFiles || len(res.Files) != 2 {
		t.Fatalf("closure %s with %d files, want %s with 2", res.Closure.ArtifactType, len(res.Files), spec.ArtifactTypeClosureFiles)
	}
	cl, err := artifact.ReadClosure(ctx, l, "app")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{}
	for i, f := range cl.Files {
		kinds[f.Annotations[spec.AnnotationStorePath]] = f.ArtifactType
		if i > 0 && f.Annotations[spec.AnnotationStorePath] < cl.Files[i-1].Annotations[spec.AnnotationStorePath] {
			t.Errorf("file entries not sorted by store path: %+v", cl.Files)
		}
	}
	if len(cl.Files) != 2 || kinds[storePath("app")] != spec.ArtifactTypeRealisation || kinds[storePath("lib")] != spec.ArtifactTypeLog {
		t.Errorf("closure files %+v", cl.Files)
	}
	fa, err := artifact.FetchFileArtifact(ctx, l, spec.RealisationTag(baseName("app.drv")+"^out"), spec.ArtifactTypeRealisation)
	if err != nil {
		t.Fatal(err)
	}
	rl, err := artifact.ReadRealisation(ctx, l, fa)
	if err != nil {
		t.Fatal(err)
	}
	pub := []narinfo.PublicKey{key.Public()}
	if !rl.V1.Verified(pub) || !rl.V2.Verified(*rl.PathKey, pub) {
		t.Errorf("realisation not signed by the push's key in both layouts: %v / %v", rl.V1.Signatures, rl.V2.Signatures)
	}
	if _, err := artifact.FetchFileArtifact(ctx, l, spec.LogTag(storePath("lib.drv")), spec.ArtifactTypeLog); err != nil {
		t.Errorf("log tag: %v", err)
	}

	dir := t.TempDir()
	pull(t, l, "app", dir)
	files := readTree(t, dir)
	for _, name := range []string{"realisations/" + src.drvHash + "!out.doi", "build-trace-v2/" + baseName("app.drv") + "/out.doi", "log/" + baseName("lib.drv")} {
		if _, ok := files[name]; !ok {
			t.Errorf("pull wrote no %s", name)
		}
	}
	if v, err := realisation.ParseV1(files["realisations/"+src.drvHash+"!out.doi"], "/nix/store"); err != nil || v.OutPath != baseName("app") || !v.Verified(pub) {
		t.Errorf("pulled realisation: %+v, %v", v, err)
	}
	if got := string(files["log/"+baseName("lib.drv")]); got != "building lib\n" {
		t.Errorf("pulled log %q", got)
	}

	again := push(t, l, src, artifact.PushOptions{Tag: "app", SignKeys: []narinfo.SecretKey{key}}, storePath("app"))
	if again.Closure.Digest != res.Closure.Digest {
		t.Errorf("second push: closure %s, first %s", again.Closure.Digest, res.Closure.Digest)
	}

	bad := res.Files[1]
	bad.StorePath = storePath("unrelated")
	if _, err := artifact.NewClosureIndexWithFiles(res.Roots, res.Paths, []artifact.ClosureFile{bad}, "/nix/store", 0); err == nil {
		t.Error("a file of a path outside the closure was listed")
	}
	// A listing titled outside its kind's names is refused by pull.
	evil := artifact.FileArtifact{Type: spec.ArtifactTypeListing, Files: []artifact.File{artifact.BytesFile("../../etc/x.ls", spec.MediaTypeListing, []byte("{}"))}}
	if err := artifact.StoreFileArtifact(ctx, l, &evil, "evil.ls"); err != nil {
		t.Fatal(err)
	}
	ci, err := artifact.NewClosureIndexWithFiles(res.Roots, res.Paths, []artifact.ClosureFile{{StorePath: storePath("app"), Artifact: &evil}}, "/nix/store", 0)
	if err != nil {
		t.Fatal(err)
	}
	blobs := ci.Blobs()
	for _, b := range blobs[:len(blobs)-1] {
		if err := backend.PushBytes(ctx, l, b.Descriptor, b.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.PushReference(ctx, ci.Top.Descriptor, bytes.NewReader(ci.Top.Data), "evil"); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if _, err := artifact.Pull(ctx, l, "evil", out, artifact.PullOptions{}); err == nil {
		t.Error("pulled a listing titled ../../etc/x.ls")
	}
	if _, err := os.Stat(filepath.Join(out, "..", "..", "etc", "x.ls")); err == nil {
		t.Error("wrote outside the directory")
	}
}
