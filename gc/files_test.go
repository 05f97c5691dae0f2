package gc_test

import (
	"bytes"
	"context"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/gc"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/realisation"
	"github.com/nixoci/nixoci/spec"
)

// storeFile stores a file artifact under its tags.
func storeFile(t *testing.T, l backend.Target, fa *artifact.FileArtifact, storePath string) []string {
	t.Helper()
	tags, err := artifact.FileTags(fa, storePath)
	if err != nil {
		t.Fatal(err)
	}
	if err := artifact.StoreFileArtifact(context.Background(), l, fa, tags...); err != nil {
		t.Fatal(err)
	}
	return tags
}

func realisationOf(t *testing.T, outPath string, seed string) *artifact.FileArtifact {
	t.Helper()
	hk, _ := realisation.ParseHashKey("sha256:" + strings.Repeat(seed, 64/len(seed)) + "!out")
	rl := &artifact.Realisation{OutPath: outPath, Output: "out", HashKey: &hk,
		V1: &realisation.V1{Key: hk, OutPath: strings.TrimPrefix(outPath, "/nix/store/"), Dependent: map[string]string{}}}
	fa, err := rl.Artifact()
	if err != nil {
		t.Fatal(err)
	}
	return fa
}

func debugInfoOf(id string, archive digest.Digest) *artifact.FileArtifact {
	return &artifact.FileArtifact{Type: spec.ArtifactTypeDebugInfo,
		Annotations: map[string]string{spec.AnnotationBuildID: id, spec.AnnotationArchive: archive.String()},
		Files:       []artifact.File{artifact.BytesFile("debuginfo/"+id, spec.MediaTypeDebugInfo, []byte(`{"archive":"x","member":"y"}`))}}
}

// TestCollectFiles: SPEC.md section 12.5. Tagged build logs,
// realisations, listings and debug-info entries stay while what they
// belong to is reached (a realisation's output path, a listing's path,
// a path naming a log's derivation as deriver, a path whose NAR is a
// debug-info entry's archive) and go otherwise; once the closures are
// removed, every one of them goes.
func TestCollectFiles(t *testing.T) {
	ctx := context.Background()
	l := fixture.Layout(t)
	_, p1 := fixture.Synthetic(t, l, "c1", spec.ClosureVersion, "f", "app1", "data1")
	_, p2 := fixture.Synthetic(t, l, "c2", spec.ClosureVersion, "f", "app2")
	// A path recording its deriver, in a closure of its own.
	nar := fixture.FileNAR(t, "app3")
	info := &narinfo.NarInfo{StorePath: fixture.StorePath("app3"), URL: spec.NarURL(fixture.Nix32(nar), spec.CompressionNone),
		Compression: "none", FileHash: "sha256:" + fixture.Nix32(nar), FileSize: uint64(len(nar)), NarHash: "sha256:" + fixture.Nix32(nar),
		NarSize: uint64(len(nar)), References: []string{}, Deriver: fixture.BaseName("app3.drv")}
	p3, err := artifact.StoreArtifact(ctx, l, info, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(nar)), nil })
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := artifact.StoreClosure(ctx, l, []string{p3.Info.StorePath}, []artifact.PathArtifact{p3}, "c3", ""); err != nil {
		t.Fatal(err)
	}

	// A closure listing a realisation of its path (SPEC.md 12.6).
	_, p4 := fixture.Synthetic(t, l, "c4-plain", spec.ClosureVersion, "f", "app4")
	r4 := realisationOf(t, p4[0].Info.StorePath, "c4")
	r4tags := storeFile(t, l, r4, p4[0].Info.StorePath)
	ci, err := artifact.NewClosureIndexWithFiles([]string{p4[0].Info.StorePath}, p4,
		[]artifact.ClosureFile{{StorePath: p4[0].Info.StorePath, Artifact: r4}}, "/nix/store", 0)
	if err != nil {
		t.Fatal(err)
	}
	blobs := ci.Blobs()
	for _, b := range blobs[:len(blobs)-1] {
		if err := backend.PushBytes(ctx, l, b.Descriptor, b.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.PushReference(ctx, ci.Top.Descriptor, bytes.NewReader(ci.Top.Data), "c4"); err != nil {
		t.Fatal(err)
	}
	if _, err := gc.Remove(ctx, l, []string{"c4-plain"}, gc.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}

	logOf := func(drv string) *artifact.FileArtifact {
		return artifact.NewLogArtifact(fixture.StorePath(drv), artifact.BytesFile("log/"+fixture.BaseName(drv), spec.MediaTypeLog, []byte("log of "+drv)))
	}
	listing := func(name string) *artifact.FileArtifact {
		return &artifact.FileArtifact{Type: spec.ArtifactTypeListing, Files: []artifact.File{
			artifact.BytesFile(spec.ListingTag(spec.PathTag(fixture.StorePath(name))), spec.MediaTypeListing, []byte(`{"version":1,"root":{"type":"regular","size":1,"narOffset":96}}`))}}
	}
	kept := map[string][]string{
		"realisation of a reached path":      storeFile(t, l, realisationOf(t, p1[0].Info.StorePath, "a1"), p1[0].Info.StorePath),
		"log of a reached path's deriver":    storeFile(t, l, logOf("app3.drv"), p3.Info.StorePath),
		"listing of a reached path":          storeFile(t, l, listing("data1"), p1[1].Info.StorePath),
		"debug info in a reached path's NAR": storeFile(t, l, debugInfoOf(strings.Repeat("ab", 20), p2[0].NAR.Digest), p2[0].Info.StorePath),
		"realisation a closure lists":        r4tags,
	}
	garbage := map[string][]string{
		"realisation of an absent path":  storeFile(t, l, realisationOf(t, fixture.StorePath("absent"), "b2"), fixture.StorePath("absent")),
		"log of an absent deriver":       storeFile(t, l, logOf("absent.drv"), fixture.StorePath("absent")),
		"listing of an absent path":      storeFile(t, l, listing("absent"), fixture.StorePath("absent")),
		"debug info in an unreached NAR": storeFile(t, l, debugInfoOf(strings.Repeat("cd", 20), digest.FromString("elsewhere")), fixture.StorePath("absent")),
	}
	res, err := gc.Collect(ctx, l, "l", noGrace)
	if err != nil {
		t.Fatal(err)
	}
	var removed []string
	for _, it := range res.Removed {
		if it.Kind != gc.KindFile && it.Kind != gc.KindClosure { // c4-plain, untagged
			t.Errorf("removed %s %s %v", it.Kind, it.StorePath, it.Tags)
		}
		removed = append(removed, it.Tags...)
	}
	for what, tags := range garbage {
		for _, tag := range tags {
			if !slices.Contains(removed, tag) {
				t.Errorf("%s (%s) was kept", what, tag)
			}
			if _, err := l.Resolve(ctx, tag); err == nil {
				t.Errorf("%s: tag %s still resolves", what, tag)
			}
		}
	}
	for what, tags := range kept {
		for _, tag := range tags {
			if _, err := l.Resolve(ctx, tag); err != nil {
				t.Errorf("%s (%s) went: %v", what, tag, err)
			}
		}
	}
	checkClosure(t, l, "c1", p1)
	checkClosure(t, l, "c4", p4)

	// Without their closures, the rest goes.
	if _, err := gc.Remove(ctx, l, []string{"c1", "c2", "c3", "c4"}, gc.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := gc.Collect(ctx, l, "l", noGrace); err != nil {
		t.Fatal(err)
	}
	for what, tags := range kept {
		for _, tag := range tags {
			if _, err := l.Resolve(ctx, tag); err == nil {
				t.Errorf("%s: tag %s still resolves after its path went", what, tag)
			}
		}
	}
}
