package artifact_test

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/spec"
)

func decodeIndex(t testing.TB, data []byte) ocispec.Index {
	t.Helper()
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		t.Fatal(err)
	}
	return idx
}

// TestNewClosureIndex: SPEC.md section 5. The index lists every path
// manifest in store-path order, then the nix-cache-info manifest; its
// subject is the first root's path manifest.
func TestNewClosureIndex(t *testing.T) {
	paths := closurePaths(t, 6)
	roots := []string{paths[5].Info.StorePath, paths[3].Info.StorePath}
	slices.SortFunc(paths, func(a, b artifact.PathArtifact) int { return strings.Compare(a.Info.StorePath, b.Info.StorePath) })
	first := slices.Min(roots)
	var firstArt artifact.PathArtifact
	for _, p := range paths {
		if p.Info.StorePath == first {
			firstArt = p
		}
	}
	ci, err := artifact.NewClosureIndex(roots, paths, "/nix/store", 0)
	if err != nil {
		t.Fatal(err)
	}
	idx := decodeIndex(t, ci.Top.Data)
	if idx.ArtifactType != spec.ArtifactTypeClosureV2 || idx.MediaType != ocispec.MediaTypeImageIndex || ci.Top.Descriptor.ArtifactType != spec.ArtifactTypeClosureV2 {
		t.Errorf("index types %q / %q", idx.MediaType, idx.ArtifactType)
	}
	if idx.Annotations[spec.AnnotationVersion] != "2" || idx.Annotations[spec.AnnotationPathCount] != "6" ||
		idx.Annotations[spec.AnnotationRoots] != first+" "+slices.Max(roots) {
		t.Errorf("annotations %v", idx.Annotations)
	}
	if idx.Subject == nil || idx.Subject.Digest != firstArt.Manifest.Digest || idx.Subject.Size != firstArt.Manifest.Size {
		t.Errorf("subject %+v, want the manifest of the first root %s", idx.Subject, firstArt.Manifest.Digest)
	}
	if len(idx.Manifests) != 7 {
		t.Fatalf("%d entries, want 6 paths and nix-cache-info", len(idx.Manifests))
	}
	for i, e := range idx.Manifests[:6] {
		if e.Digest != paths[i].Manifest.Digest || e.ArtifactType != spec.ArtifactTypePath || e.Annotations[spec.AnnotationStorePath] != paths[i].Info.StorePath {
			t.Errorf("entry %d = %+v, want %s", i, e, paths[i].Info.StorePath)
		}
	}
	if last := idx.Manifests[6]; last.Digest != ci.CacheInfoManifest.Descriptor.Digest || last.ArtifactType != spec.ArtifactTypeCacheInfo {
		t.Errorf("last entry %+v, want the nix-cache-info manifest", last)
	}
	cim := decodeManifest(t, ci.CacheInfoManifest.Data)
	if len(cim.Layers) != 1 || cim.Layers[0].Digest != ci.CacheInfo.Descriptor.Digest || cim.Layers[0].Annotations[spec.AnnotationTitle] != "nix-cache-info" {
		t.Errorf("nix-cache-info manifest layers %+v", cim.Layers)
	}
	if _, err := artifact.NewClosureIndex([]string{storePath("elsewhere")}, paths, "/nix/store", 0); err == nil {
		t.Error("a root outside the closure was accepted")
	}
}

// TestNewClosureIndexDeterministicAndSplit: the same paths in any order
// give the same bytes; under a small limit the index is split into parts
// of at most that size that together list the same entries.
func TestNewClosureIndexDeterministicAndSplit(t *testing.T) {
	paths := closurePaths(t, 40)
	roots := []string{paths[39].Info.StorePath}
	whole, err := artifact.NewClosureIndex(roots, paths, "/nix/store", 0)
	if err != nil {
		t.Fatal(err)
	}
	const limit = 12000
	split, err := artifact.NewClosureIndex(roots, paths, "/nix/store", limit)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		perm := slices.Clone(paths)
		rand.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
		again, err := artifact.NewClosureIndex(roots, perm, "/nix/store", limit)
		if err != nil {
			t.Fatal(err)
		}
		if again.Top.Descriptor.Digest != split.Top.Descriptor.Digest {
			t.Fatalf("shuffled paths gave %s, want %s", again.Top.Descriptor.Digest, split.Top.Descriptor.Digest)
		}
	}
	if len(split.Parts) < 2 {
		t.Fatalf("limit %d: %d parts, want a split", limit, len(split.Parts))
	}
	var entries []ocispec.Descriptor
	for i, p := range split.Parts {
		if len(p.Data) > limit {
			t.Errorf("part %d is %d bytes", i+1, len(p.Data))
		}
		part := decodeIndex(t, p.Data)
		if part.ArtifactType != spec.ArtifactTypeClosurePartV2 || part.Subject != nil {
			t.Errorf("part %d: artifactType %q, subject %v", i+1, part.ArtifactType, part.Subject)
		}
		entries = append(entries, part.Manifests...)
	}
	if want := decodeIndex(t, whole.Top.Data).Manifests; !slices.EqualFunc(entries, want, func(a, b ocispec.Descriptor) bool { return a.Digest == b.Digest }) {
		t.Errorf("parts list %d entries, the whole index %d", len(entries), len(want))
	}
	top := decodeIndex(t, split.Top.Data)
	if top.Subject == nil || top.Subject.Digest != paths[39].Manifest.Digest || len(top.Manifests) != len(split.Parts) {
		t.Errorf("top index: subject %v, %d entries for %d parts", top.Subject, len(top.Manifests), len(split.Parts))
	}
}

// TestClosureFoundFromRoot: a pushed closure is listed among the
// referrers of its first root's path manifest, and reads back by digest
// alone (as after a copy that carried no tags).
func TestClosureFoundFromRoot(t *testing.T) {
	c := closureCache(t)
	l := openLayout(t)
	ctx := t.Context()
	res := push(t, l, openCache(t, c.URL(), nil), artifact.PushOptions{Tag: "app"}, storePath("app"))
	root, err := artifact.FetchPath(ctx, l, storePath("app"))
	if err != nil {
		t.Fatal(err)
	}
	var found []ocispec.Descriptor
	if err := l.Referrers(ctx, root.Manifest, spec.ArtifactTypeClosureV2, func(r []ocispec.Descriptor) error {
		found = append(found, r...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].Digest != res.Closure.Digest || found[0].Annotations[spec.AnnotationRoots] != storePath("app") {
		t.Fatalf("referrers of the root = %+v, want the closure %s", found, res.Closure.Digest)
	}
	cl, err := artifact.ReadClosure(ctx, l, res.Closure.Digest.String())
	if err != nil {
		t.Fatal(err)
	}
	arts, err := artifact.ClosurePaths(ctx, l, cl, 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(arts) != 5 || cl.Version != spec.ClosureVersion {
		t.Errorf("closure read back: version %s, %d paths", cl.Version, len(arts))
	}
	for i, a := range arts {
		if a.Manifest.Digest != res.Paths[i].Manifest.Digest {
			t.Errorf("path %d: %s, pushed %s", i, a.Manifest.Digest, res.Paths[i].Manifest.Digest)
		}
	}
}
