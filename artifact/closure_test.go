package artifact_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/spec"
)

func decodeManifest(t testing.TB, data []byte) ocispec.Manifest {
	t.Helper()
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func digests(ds []ocispec.Descriptor) []digest.Digest {
	var out []digest.Digest
	for _, d := range ds {
		out = append(out, d.Digest)
	}
	return out
}

// wantLayers is the layer order of SPEC.md section 5: per path sorted by
// store path, its NAR (unless already contributed) and its narinfo, then
// nix-cache-info.
func wantLayers(paths []artifact.PathArtifact, cacheInfo ocispec.Descriptor) []ocispec.Descriptor {
	sorted := slices.Clone(paths)
	slices.SortFunc(sorted, func(a, b artifact.PathArtifact) int { return strings.Compare(a.Info.StorePath, b.Info.StorePath) })
	seen := map[digest.Digest]bool{}
	var out []ocispec.Descriptor
	for _, p := range sorted {
		if !seen[p.NAR.Digest] {
			seen[p.NAR.Digest] = true
			out = append(out, p.NAR)
		}
		out = append(out, p.NarInfo)
	}
	return append(out, cacheInfo)
}

func closurePaths(t testing.TB, n int) []artifact.PathArtifact {
	t.Helper()
	var paths []artifact.PathArtifact
	for i := range n {
		name := fmt.Sprintf("pkg-%02d", i)
		var refs []string
		if i > 0 {
			refs = []string{fmt.Sprintf("pkg-%02d", i-1)}
		}
		paths = append(paths, fakePath(t, name, name, refs...))
	}
	return paths
}

func TestNewClosureManifests(t *testing.T) {
	app := fakePath(t, "app", "app", "lib", "data")
	lib := fakePath(t, "lib", "lib")
	data := fakePath(t, "data", "data")
	// Same NAR as data under another store path: its NAR layer is shared.
	twin := fakePath(t, "data-twin", "data")
	paths := []artifact.PathArtifact{app, lib, data, twin}
	roots := []string{app.Info.StorePath, lib.Info.StorePath}

	cm, err := artifact.NewClosureManifests(roots, paths, "/nix/store", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(cm.Parts) != 0 {
		t.Fatalf("small closure split into %d parts", len(cm.Parts))
	}

	ci := []byte(spec.CacheInfo("/nix/store", spec.DefaultPriority))
	wantCI := ocispec.Descriptor{
		MediaType:   spec.MediaTypeCacheInfo,
		Digest:      digest.FromBytes(ci),
		Size:        int64(len(ci)),
		Annotations: map[string]string{spec.AnnotationTitle: "nix-cache-info"},
	}
	if !bytes.Equal(cm.CacheInfo.Data, ci) || !reflect.DeepEqual(cm.CacheInfo.Descriptor, wantCI) {
		t.Errorf("CacheInfo = %+v %q, want %+v %q", cm.CacheInfo.Descriptor, cm.CacheInfo.Data, wantCI, ci)
	}

	m := decodeManifest(t, cm.Top.Data)
	if m.MediaType != ocispec.MediaTypeImageManifest || m.ArtifactType != spec.ArtifactTypeClosure || m.SchemaVersion != 2 {
		t.Errorf("closure manifest: mediaType %q, artifactType %q, schemaVersion %d", m.MediaType, m.ArtifactType, m.SchemaVersion)
	}
	want := wantLayers(paths, wantCI)
	if !reflect.DeepEqual(m.Layers, want) {
		t.Errorf("layers:\n got %v\nwant %v", digests(m.Layers), digests(want))
	}
	// 4 narinfos, 3 distinct NARs, nix-cache-info.
	if len(m.Layers) != 8 {
		t.Errorf("%d layers, want 8", len(m.Layers))
	}
	sortedRoots := slices.Sorted(slices.Values(roots))
	wantAnn := map[string]string{
		spec.AnnotationVersion:   spec.Version,
		spec.AnnotationRoots:     strings.Join(sortedRoots, " "),
		spec.AnnotationPathCount: "4",
	}
	if !reflect.DeepEqual(m.Annotations, wantAnn) {
		t.Errorf("annotations = %v, want %v", m.Annotations, wantAnn)
	}
	wantTop := ocispec.Descriptor{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: spec.ArtifactTypeClosure,
		Digest:       digest.FromBytes(cm.Top.Data),
		Size:         int64(len(cm.Top.Data)),
	}
	if !reflect.DeepEqual(cm.Top.Descriptor, wantTop) {
		t.Errorf("Top descriptor = %+v, want %+v", cm.Top.Descriptor, wantTop)
	}

	// Another store directory changes nix-cache-info.
	other, err := artifact.NewClosureManifests(roots, paths, "/gnu/store", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(other.CacheInfo.Data); !strings.HasPrefix(got, "StoreDir: /gnu/store\n") {
		t.Errorf("nix-cache-info for /gnu/store = %q", got)
	}
}

func TestNewClosureManifestsDeterministic(t *testing.T) {
	paths := closurePaths(t, 7)
	paths = append(paths, fakePath(t, "shared-nar", "pkg-03"))
	roots := []string{paths[6].Info.StorePath, paths[7].Info.StorePath}
	for _, limit := range []int{0, 2500} {
		first, err := artifact.NewClosureManifests(roots, paths, "/nix/store", limit)
		if err != nil {
			t.Fatal(err)
		}
		if limit > 0 && len(first.Parts) == 0 {
			t.Fatalf("limit %d did not split the closure", limit)
		}
		for i := range 20 {
			// A different permutation each round, roots reversed on odd rounds.
			perm := slices.Clone(paths)
			for j := range perm {
				k := (j*7 + i*3) % len(perm)
				perm[j], perm[k] = perm[k], perm[j]
			}
			r := slices.Clone(roots)
			if i%2 == 1 {
				slices.Reverse(r)
			}
			got, err := artifact.NewClosureManifests(r, perm, "/nix/store", limit)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Top.Data, first.Top.Data) || len(got.Parts) != len(first.Parts) {
				t.Fatalf("limit %d, permutation %d: different closure manifest:\n%s\n%s", limit, i, got.Top.Data, first.Top.Data)
			}
			for p := range got.Parts {
				if !bytes.Equal(got.Parts[p].Data, first.Parts[p].Data) {
					t.Fatalf("limit %d, permutation %d: part %d differs", limit, i, p+1)
				}
			}
		}
	}
}

func TestNewClosureManifestsSplit(t *testing.T) {
	paths := closurePaths(t, 12)
	// Two paths sharing a NAR, so one narinfo has no NAR beside it.
	paths = append(paths, fakePath(t, "pkg-05-copy", "pkg-05"))
	roots := []string{paths[11].Info.StorePath}
	whole, err := artifact.NewClosureManifests(roots, paths, "/nix/store", 0)
	if err != nil {
		t.Fatal(err)
	}
	allLayers := decodeManifest(t, whole.Top.Data).Layers
	narOwner := map[digest.Digest]string{} // NAR digest -> title of the narinfo that follows it
	for i, l := range allLayers {
		if l.MediaType != spec.MediaTypeNarInfo && l.MediaType != spec.MediaTypeCacheInfo {
			narOwner[l.Digest] = allLayers[i+1].Annotations[spec.AnnotationTitle]
		}
	}

	splits := 0
	for limit := 200; limit <= len(whole.Top.Data)+100; limit += 37 {
		cm, err := artifact.NewClosureManifests(roots, paths, "/nix/store", limit)
		if err != nil {
			// Too small for one path's layers, or for the index of parts.
			if limit >= len(whole.Top.Data) || !strings.Contains(err.Error(), "index") && !strings.Contains(err.Error(), "do not fit") {
				t.Errorf("limit %d: %v", limit, err)
			}
			continue
		}
		if len(cm.Top.Data) > limit {
			t.Errorf("limit %d: top is %d bytes", limit, len(cm.Top.Data))
		}
		if len(cm.Parts) == 0 {
			if !bytes.Equal(cm.Top.Data, whole.Top.Data) {
				t.Errorf("limit %d: unsplit manifest differs from the default one", limit)
			}
			continue
		}
		splits++
		if len(cm.Parts) < 2 {
			t.Errorf("limit %d: split into %d part", limit, len(cm.Parts))
		}

		var idx ocispec.Index
		if err := json.Unmarshal(cm.Top.Data, &idx); err != nil {
			t.Fatal(err)
		}
		if idx.MediaType != ocispec.MediaTypeImageIndex || idx.ArtifactType != spec.ArtifactTypeClosure || idx.SchemaVersion != 2 {
			t.Errorf("limit %d: index mediaType %q artifactType %q", limit, idx.MediaType, idx.ArtifactType)
		}
		if cm.Top.Descriptor.MediaType != ocispec.MediaTypeImageIndex || cm.Top.Descriptor.Digest != digest.FromBytes(cm.Top.Data) {
			t.Errorf("limit %d: Top descriptor %+v does not describe the index", limit, cm.Top.Descriptor)
		}
		wantAnn := map[string]string{spec.AnnotationVersion: "1", spec.AnnotationRoots: roots[0], spec.AnnotationPathCount: "13"}
		if !reflect.DeepEqual(idx.Annotations, wantAnn) {
			t.Errorf("limit %d: index annotations %v, want %v", limit, idx.Annotations, wantAnn)
		}

		var joined []ocispec.Descriptor
		for i, p := range cm.Parts {
			if len(p.Data) > limit {
				t.Errorf("limit %d: part %d is %d bytes", limit, i+1, len(p.Data))
			}
			if !reflect.DeepEqual(idx.Manifests[i], p.Descriptor) {
				t.Errorf("limit %d: index entry %d = %+v, want part descriptor %+v", limit, i, idx.Manifests[i], p.Descriptor)
			}
			if p.Descriptor.Digest != digest.FromBytes(p.Data) || p.Descriptor.Size != int64(len(p.Data)) || p.Descriptor.ArtifactType != spec.ArtifactTypeClosurePart {
				t.Errorf("limit %d: part %d descriptor %+v does not describe it", limit, i+1, p.Descriptor)
			}
			m := decodeManifest(t, p.Data)
			if m.ArtifactType != spec.ArtifactTypeClosurePart {
				t.Errorf("limit %d: part %d artifactType %q", limit, i+1, m.ArtifactType)
			}
			partAnn := map[string]string{spec.AnnotationPart: fmt.Sprintf("%d/%d", i+1, len(cm.Parts))}
			for k, v := range wantAnn {
				partAnn[k] = v
			}
			if !reflect.DeepEqual(m.Annotations, partAnn) {
				t.Errorf("limit %d: part %d annotations %v, want %v", limit, i+1, m.Annotations, partAnn)
			}
			if len(m.Layers) == 0 {
				t.Errorf("limit %d: part %d is empty", limit, i+1)
			}
			for j, l := range m.Layers {
				if owner, ok := narOwner[l.Digest]; ok {
					if j+1 >= len(m.Layers) || m.Layers[j+1].Annotations[spec.AnnotationTitle] != owner {
						t.Errorf("limit %d: part %d separates a NAR from its narinfo %s", limit, i+1, owner)
					}
				}
				if l.MediaType == spec.MediaTypeCacheInfo && (i != len(cm.Parts)-1 || j != len(m.Layers)-1) {
					t.Errorf("limit %d: nix-cache-info in part %d, layer %d; want last of the last part", limit, i+1, j)
				}
			}
			joined = append(joined, m.Layers...)
		}
		if !reflect.DeepEqual(joined, allLayers) {
			t.Errorf("limit %d: parts' layers in order differ from the closure's layers", limit)
		}
	}
	t.Logf("%d of the limits split the %d-byte closure manifest", splits, len(whole.Top.Data))
	if splits < 10 {
		t.Fatalf("only %d limits produced a split closure", splits)
	}

	// A limit too small for one path's NAR and narinfo.
	if _, err := artifact.NewClosureManifests(roots, paths, "/nix/store", 600); err == nil {
		t.Error("limit 600 (smaller than one path's layers): no error")
	} else if !strings.Contains(err.Error(), "600") {
		t.Errorf("limit 600: error %q does not name the limit", err)
	}
}

func TestNewClosureManifestsEmpty(t *testing.T) {
	if _, err := artifact.NewClosureManifests(nil, nil, "/nix/store", 0); err == nil {
		t.Error("empty closure: no error")
	}
}
