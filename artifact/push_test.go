package artifact_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

var appClosure = []string{"app", "lib", "base", "data", "twin"}

var openLayout = fixture.Layout

func push(t testing.TB, l backend.Target, src artifact.Source, opts artifact.PushOptions, args ...string) *artifact.PushResult {
	t.Helper()
	if opts.TempDir == "" {
		opts.TempDir = t.TempDir()
	}
	res, err := artifact.Push(t.Context(), l, src, args, opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func pull(t testing.TB, l backend.Target, ref, dir string) *artifact.PullResult {
	t.Helper()
	res, err := artifact.Pull(t.Context(), l, ref, dir, artifact.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// cacheFiles is what pulling the closure of names must write: the cache's
// narinfos and NARs for them, and nix-cache-info.
func cacheFiles(t testing.TB, c *fixture.Cache, names ...string) map[string][]byte {
	t.Helper()
	all := readTree(t, c.Dir)
	want := map[string][]byte{"nix-cache-info": all["nix-cache-info"]}
	for _, n := range names {
		info := c.Infos[storePath(n)]
		for _, f := range []string{info.HashPart() + ".narinfo", info.URL} {
			data, ok := all[f]
			if !ok {
				t.Fatalf("cache has no %s", f)
			}
			want[f] = data
		}
	}
	return want
}

func compareTrees(t *testing.T, got, want map[string][]byte) {
	t.Helper()
	for name, w := range want {
		if g, ok := got[name]; !ok {
			t.Errorf("%s missing", name)
		} else if !bytes.Equal(g, w) {
			t.Errorf("%s differs:\n got %q\nwant %q", name, g, w)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("unexpected file %s", name)
		}
	}
}

func TestPushPull(t *testing.T) {
	c := closureCache(t)
	l := openLayout(t)
	ctx := t.Context()
	progress := &artifact.Progress{}
	res := push(t, l, openCache(t, c.URL(), nil), artifact.PushOptions{Progress: progress}, storePath("app"))

	if res.Tag != "app" {
		t.Errorf("default tag = %q, want %q", res.Tag, "app")
	}
	if !slices.Equal(res.Roots, []string{storePath("app")}) {
		t.Errorf("Roots = %v", res.Roots)
	}
	if res.Packed != 5 || res.Reused != 0 || len(res.Paths) != 5 {
		t.Errorf("Packed %d, Reused %d, %d paths; want 5, 0, 5", res.Packed, res.Reused, len(res.Paths))
	}
	if !slices.IsSortedFunc(res.Paths, func(a, b artifact.PathArtifact) int { return strings.Compare(a.Info.StorePath, b.Info.StorePath) }) {
		t.Error("PushResult.Paths not sorted by store path")
	}
	var narTotal int64
	for _, n := range appClosure {
		narTotal += int64(c.Infos[storePath(n)].NarSize)
	}
	if progress.PathsTotal.Load() != 5 || progress.PathsDone.Load() != 5 || progress.PathsReused.Load() != 0 ||
		progress.NarBytes.Load() != narTotal || progress.Transferred.Load() == 0 {
		t.Errorf("progress: total %d, done %d, reused %d, NAR bytes %d (want %d), transferred %d",
			progress.PathsTotal.Load(), progress.PathsDone.Load(), progress.PathsReused.Load(), progress.NarBytes.Load(), narTotal, progress.Transferred.Load())
	}

	// The closure tag and every path's tag name complete artifacts.
	if got, err := l.Resolve(ctx, "app"); err != nil || got.Digest != res.Closure.Digest {
		t.Errorf("Resolve(app) = %s, %v; want %s", got.Digest, err, res.Closure.Digest)
	}
	for _, p := range res.Paths {
		art, err := artifact.FetchPath(ctx, l, p.Info.StorePath)
		if err != nil {
			t.Errorf("%s: %v", p.Info.StorePath, err)
			continue
		}
		if art.Manifest.Digest != p.Manifest.Digest {
			t.Errorf("%s: tag names %s, want %s", p.Info.StorePath, art.Manifest.Digest, p.Manifest.Digest)
		}
		for _, d := range []ocispec.Descriptor{art.NAR, art.NarInfo} {
			if ok, err := l.Exists(ctx, d); !ok || err != nil {
				t.Errorf("%s: blob %s not stored (%v)", p.Info.StorePath, d.Annotations[spec.AnnotationTitle], err)
			}
		}
	}
	if _, err := l.Resolve(ctx, spec.PathTag(storePath("unrelated"))); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("a path outside the closure was stored: %v", err)
	}

	out := filepath.Join(t.TempDir(), "out")
	pres := pull(t, l, "app", out)
	want := cacheFiles(t, c, appClosure...)
	compareTrees(t, readTree(t, out), want)
	if pres.Written != len(want) || pres.Present != 0 {
		t.Errorf("Pull: Written %d, Present %d; want %d, 0", pres.Written, pres.Present, len(want))
	}
	if pres.Closure.Descriptor.Digest != res.Closure.Digest || pres.Closure.PathCount != 5 || pres.Closure.Parts != 1 {
		t.Errorf("Pull closure = %+v", pres.Closure)
	}

	// Pulling again keeps every file.
	again := pull(t, l, res.Closure.Digest.String(), out)
	if again.Written != 0 || again.Present != len(want) {
		t.Errorf("second Pull: Written %d, Present %d; want 0, %d", again.Written, again.Present, len(want))
	}

	// Pushing again reuses every path and gives the same closure.
	progress2 := &artifact.Progress{}
	res2 := push(t, l, openCache(t, c.URL(), nil), artifact.PushOptions{Progress: progress2}, storePath("app"))
	if res2.Packed != 0 || res2.Reused != 5 {
		t.Errorf("second Push: Packed %d, Reused %d; want 0, 5", res2.Packed, res2.Reused)
	}
	if progress2.PathsReused.Load() != 5 {
		t.Errorf("second Push: progress reports %d reused, want 5", progress2.PathsReused.Load())
	}
	if res2.Closure.Digest != res.Closure.Digest {
		t.Errorf("second Push: closure %s, want %s", res2.Closure.Digest, res.Closure.Digest)
	}
}

func TestPushRoots(t *testing.T) {
	c := closureCache(t)
	l := openLayout(t)
	res := push(t, l, openCache(t, c.URL(), nil), artifact.PushOptions{Tag: "two"}, storePath("lib"), storePath("data"), storePath("lib"))
	want := []string{storePath("lib"), storePath("data")}
	slices.Sort(want)
	if !slices.Equal(res.Roots, want) {
		t.Errorf("Roots = %v, want %v (sorted, deduplicated)", res.Roots, want)
	}
	if res.Tag != "two" || len(res.Paths) != 3 {
		t.Errorf("Tag %q, %d paths; want two, 3", res.Tag, len(res.Paths))
	}
	c2, err := artifact.ReadClosure(t.Context(), l, "two")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c2.Roots, want) || c2.PathCount != 3 {
		t.Errorf("stored closure roots %v, %d paths", c2.Roots, c2.PathCount)
	}
}

func TestPushSignAndResign(t *testing.T) {
	c := closureCache(t)
	l := openLayout(t)
	k1, k2 := testKey("cache-1"), testKey("cache-2")

	res := push(t, l, openCache(t, c.URL(), nil), artifact.PushOptions{SignKeys: []narinfo.SecretKey{k1}}, storePath("app"))
	for _, p := range res.Paths {
		if !k1.Public().Verify(p.Info) {
			t.Errorf("%s: not signed by %s: %v", p.Info.StorePath, k1.Name, p.Info.Sigs)
		}
	}
	checkPulledSigs(t, l, "app", k1.Public())

	// Re-pushing with the same key changes nothing.
	same := push(t, l, openCache(t, c.URL(), nil), artifact.PushOptions{SignKeys: []narinfo.SecretKey{k1}}, storePath("app"))
	for i := range same.Paths {
		if same.Paths[i].Manifest.Digest != res.Paths[i].Manifest.Digest {
			t.Errorf("%s: re-push with the same key rewrote the manifest", same.Paths[i].Info.StorePath)
		}
	}

	// Without the NARs, a push with a second key still works: stored paths
	// are re-signed from their narinfo, never re-read.
	if err := os.RemoveAll(filepath.Join(c.Dir, "nar")); err != nil {
		t.Fatal(err)
	}
	res2 := push(t, l, openCache(t, c.URL(), nil), artifact.PushOptions{SignKeys: []narinfo.SecretKey{k2}}, storePath("app"))
	if res2.Packed != 0 || res2.Reused != 5 {
		t.Errorf("re-sign: Packed %d, Reused %d; want 0, 5", res2.Packed, res2.Reused)
	}
	for i, p := range res2.Paths {
		if !k1.Public().Verify(p.Info) || !k2.Public().Verify(p.Info) {
			t.Errorf("%s: want signatures by both keys, have %v", p.Info.StorePath, p.Info.Sigs)
		}
		if p.NAR.Digest != res.Paths[i].NAR.Digest {
			t.Errorf("%s: NAR blob changed from %s to %s", p.Info.StorePath, res.Paths[i].NAR.Digest, p.NAR.Digest)
		}
		if p.Manifest.Digest == res.Paths[i].Manifest.Digest {
			t.Errorf("%s: manifest not rewritten with the new signature", p.Info.StorePath)
		}
	}
	if res2.Closure.Digest == res.Closure.Digest {
		t.Error("closure manifest unchanged although every narinfo changed")
	}
	checkPulledSigs(t, l, "app", k1.Public(), k2.Public())
}

// checkPulledSigs pulls ref and checks every narinfo is signed by keys.
func checkPulledSigs(t *testing.T, l backend.Target, ref string, keys ...narinfo.PublicKey) {
	t.Helper()
	out := t.TempDir()
	pull(t, l, ref, out)
	infos, _ := filepath.Glob(filepath.Join(out, "*.narinfo"))
	if len(infos) != 5 {
		t.Errorf("pulled %d narinfos, want 5", len(infos))
	}
	for _, f := range infos {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		info, err := narinfo.Parse(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, k := range keys {
			if !k.Verify(info) {
				t.Errorf("%s: no valid signature by %s in %v", filepath.Base(f), k.Name, info.Sigs)
			}
		}
	}
}

func TestPullExistingFiles(t *testing.T) {
	c := closureCache(t)
	l := openLayout(t)
	push(t, l, openCache(t, c.URL(), nil), artifact.PushOptions{}, storePath("app"))
	want := cacheFiles(t, c, appClosure...)

	out := t.TempDir()
	lib := c.Infos[storePath("lib")]
	right := filepath.Join(out, filepath.FromSlash(lib.URL))
	wrong := filepath.Join(out, lib.HashPart()+".narinfo")
	os.MkdirAll(filepath.Dir(right), 0o755)
	if err := os.WriteFile(right, want[lib.URL], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wrong, []byte("StorePath: stale\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Same length, wrong content.
	base := c.Infos[storePath("base")]
	sameLen := bytes.Repeat([]byte("x"), len(want[base.URL]))
	if err := os.WriteFile(filepath.Join(out, filepath.FromSlash(base.URL)), sameLen, 0o644); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(right)
	if err != nil {
		t.Fatal(err)
	}

	res := pull(t, l, "app", out)
	if res.Present != 1 || res.Written != len(want)-1 {
		t.Errorf("Written %d, Present %d; want %d, 1", res.Written, res.Present, len(want)-1)
	}
	after, err := os.Stat(right)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Error("a file with the right content was replaced")
	}
	compareTrees(t, readTree(t, out), want)
}

func TestPullCorruptBlob(t *testing.T) {
	c := closureCache(t)
	tests := []struct {
		name    string
		layer   func(p artifact.PathArtifact) ocispec.Descriptor
		corrupt func(data []byte) []byte
	}{
		{"NAR byte flipped", func(p artifact.PathArtifact) ocispec.Descriptor { return p.NAR }, func(d []byte) []byte { d[len(d)/2] ^= 0xff; return d }},
		{"NAR truncated", func(p artifact.PathArtifact) ocispec.Descriptor { return p.NAR }, func(d []byte) []byte { return d[:len(d)-1] }},
		{"narinfo extended", func(p artifact.PathArtifact) ocispec.Descriptor { return p.NarInfo }, func(d []byte) []byte { return append(d, "Sig: x:y\n"...) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := openLayout(t)
			res := push(t, l, openCache(t, c.URL(), nil), artifact.PushOptions{}, storePath("app"))
			var lib artifact.PathArtifact
			for _, p := range res.Paths {
				if p.Info.StorePath == storePath("lib") {
					lib = p
				}
			}
			d := tt.layer(lib)
			blob := filepath.Join(l.Dir(), "blobs", "sha256", d.Digest.Encoded())
			data, err := os.ReadFile(blob)
			if err != nil {
				t.Fatal(err)
			}
			os.Chmod(blob, 0o644)
			if err := os.WriteFile(blob, tt.corrupt(data), 0o644); err != nil {
				t.Fatal(err)
			}

			out := t.TempDir()
			_, err = artifact.Pull(t.Context(), l, "app", out, artifact.PullOptions{Jobs: 2})
			if !errors.Is(err, artifact.ErrHashMismatch) {
				t.Fatalf("Pull error = %v, want ErrHashMismatch", err)
			}
			if !strings.Contains(err.Error(), d.Digest.String()) {
				t.Errorf("error %q does not name the blob", err)
			}
			title := d.Annotations[spec.AnnotationTitle]
			files := readTree(t, out)
			if _, ok := files[title]; ok {
				t.Errorf("%s written although its blob is corrupt", title)
			}
			if _, ok := files["nix-cache-info"]; ok {
				t.Error("nix-cache-info written by a failed pull")
			}
			for name := range files {
				if strings.Contains(name, ".part-") {
					t.Errorf("temporary file %s left behind", name)
				}
				if strings.HasSuffix(name, ".narinfo") && d.MediaType != spec.MediaTypeNarInfo {
					t.Errorf("narinfo %s written before every NAR was verified", name)
				}
			}
		})
	}
}

// TestPullOtherReferences: a store path's own tag reads as a closure of
// one (its NAR and narinfo, no nix-cache-info); manifests nixoci did not
// write are refused.
func TestPullOtherReferences(t *testing.T) {
	c := closureCache(t)
	l := openLayout(t)
	ctx := t.Context()
	push(t, l, openCache(t, c.URL(), nil), artifact.PushOptions{}, storePath("app"))

	lib := c.Infos[storePath("lib")]
	out := t.TempDir()
	res, err := artifact.Pull(ctx, l, spec.PathTag(lib.StorePath), out, artifact.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	all := cacheFiles(t, c, "lib")
	delete(all, "nix-cache-info")
	compareTrees(t, readTree(t, out), all)
	if res.Written != 2 || res.Closure.PathCount != 1 || !slices.Equal(res.Closure.Roots, []string{lib.StorePath}) {
		t.Errorf("pulling a path tag: %+v, closure %+v", res, res.Closure)
	}

	if _, err := artifact.Pull(ctx, l, "absent", t.TempDir(), artifact.PullOptions{}); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("pulling a missing tag: error = %v, want errdef.ErrNotFound", err)
	}

	// Manifests of another kind or format version.
	closure, err := artifact.ReadClosure(ctx, l, "app")
	if err != nil {
		t.Fatal(err)
	}
	closureLayers, err := artifact.BinaryCacheLayers(ctx, l, closure, 4)
	if err != nil {
		t.Fatal(err)
	}
	foreign := []struct {
		tag      string
		manifest ocispec.Manifest
	}{
		{"other-type", ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: "application/vnd.example", Config: ocispec.DescriptorEmptyJSON, Layers: closureLayers,
			Annotations: map[string]string{spec.AnnotationVersion: "1"}}},
		{"version-2", ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: spec.ArtifactTypeClosure, Config: ocispec.DescriptorEmptyJSON, Layers: closureLayers,
			Annotations: map[string]string{spec.AnnotationVersion: "2"}}},
		{"bad-title", ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: spec.ArtifactTypeClosure, Config: ocispec.DescriptorEmptyJSON,
			Layers:      []ocispec.Descriptor{{MediaType: spec.MediaTypeNarInfo, Digest: closureLayers[1].Digest, Size: closureLayers[1].Size, Annotations: map[string]string{spec.AnnotationTitle: "../escape.narinfo"}}},
			Annotations: map[string]string{spec.AnnotationVersion: "1"}}},
	}
	for _, f := range foreign {
		f.manifest.SchemaVersion = 2
		data, _ := json.Marshal(f.manifest)
		desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(data), Size: int64(len(data))}
		if err := l.PushReference(ctx, desc, bytes.NewReader(data), f.tag); err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if _, err := artifact.Pull(ctx, l, f.tag, dir, artifact.PullOptions{}); !errors.Is(err, artifact.ErrNotArtifact) {
			t.Errorf("%s: Pull error = %v, want ErrNotArtifact", f.tag, err)
		}
		if files := readTree(t, dir); len(files) != 0 {
			t.Errorf("%s: refused pull wrote %v", f.tag, slices.Collect(maps.Keys(files)))
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape.narinfo")); err == nil {
			t.Errorf("%s: a file was written outside the pull directory", f.tag)
		}
	}
}

func TestInspect(t *testing.T) {
	c := closureCache(t)
	l := openLayout(t)
	k := testKey("inspect-1")
	res := push(t, l, openCache(t, c.URL(), nil), artifact.PushOptions{Tag: "v1", SignKeys: []narinfo.SecretKey{k}}, storePath("app"))

	for _, jobs := range []int{0, 1, 16} {
		s, err := artifact.Inspect(t.Context(), l, "v1", jobs)
		if err != nil {
			t.Fatal(err)
		}
		if s.Reference != "v1" || s.Digest != res.Closure.Digest.String() || s.MediaType != ocispec.MediaTypeImageIndex ||
			s.Parts != 1 || s.ManifestSize != res.Closure.Size || !slices.Equal(s.Roots, []string{storePath("app")}) {
			t.Errorf("summary header = %+v", s)
		}
		if len(s.Paths) != 5 {
			t.Fatalf("%d paths, want 5", len(s.Paths))
		}
		var narSize, fileSize uint64
		for i, p := range s.Paths {
			want := c.Infos[p.StorePath]
			if want == nil {
				t.Fatalf("unknown path %s", p.StorePath)
			}
			if i > 0 && s.Paths[i-1].StorePath >= p.StorePath {
				t.Error("paths not sorted")
			}
			if p.NarHash != want.NarHash || p.NarSize != want.NarSize || p.FileSize != want.FileSize ||
				p.Compression != want.Compression || p.URL != want.URL || p.Deriver != want.Deriver ||
				!slices.Equal(p.References, want.References) || len(p.Sigs) != 1 || !strings.HasPrefix(p.Sigs[0], "inspect-1:") {
				t.Errorf("%s: summary %+v, want from %+v", p.StorePath, p, want)
			}
			narSize += want.NarSize
			fileSize += want.FileSize
		}
		if s.NarSize != narSize || s.FileSize != fileSize {
			t.Errorf("totals NAR %d, file %d; want %d, %d", s.NarSize, s.FileSize, narSize, fileSize)
		}
	}

	// Unsigned paths report an empty list, not null.
	l2 := openLayout(t)
	push(t, l2, openCache(t, c.URL(), nil), artifact.PushOptions{}, storePath("data"))
	s, err := artifact.Inspect(t.Context(), l2, "data", 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Paths) != 1 || s.Paths[0].Sigs == nil {
		t.Errorf("unsigned path summary %+v, want Sigs = []", s.Paths)
	}

	// A path tag (the hash part of a store path) names that path alone.
	hash := spec.PathTag(storePath("lib"))
	s, err = artifact.Inspect(t.Context(), l, hash, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := c.Infos[storePath("lib")]
	if len(s.Paths) != 1 || s.Paths[0].StorePath != want.StorePath || s.Paths[0].NarHash != want.NarHash ||
		!slices.Equal(s.Roots, []string{want.StorePath}) || s.MediaType != ocispec.MediaTypeImageManifest || s.NarSize != want.NarSize {
		t.Errorf("path tag summary %+v", s)
	}
	if _, err := artifact.Inspect(t.Context(), l, spec.PathTag(storePath("ghost")), 1); err == nil {
		t.Error("a missing path tag inspected")
	}
}

// TestPushDeterministic: parallelism never changes what is written.
func TestPushDeterministic(t *testing.T) {
	c := closureCache(t)
	var firstRes *artifact.PushResult
	var firstTree map[string][]byte
	for _, jobs := range []int{1, 8, 3} {
		l := openLayout(t)
		at := time.Date(2026, 12, 1, 22, 33, 46, 0, time.UTC) // the push record's time
		res := push(t, l, openCache(t, c.URL(), nil), artifact.PushOptions{Jobs: jobs, Tag: "t", Record: artifact.RecordOptions{At: at}}, storePath("app"))
		tree := readTree(t, l.Dir())
		if firstRes == nil {
			firstRes, firstTree = res, tree
			continue
		}
		if res.Closure.Digest != firstRes.Closure.Digest || !bytes.Equal(res.Index.Top.Data, firstRes.Index.Top.Data) {
			t.Errorf("Jobs %d: closure %s, want %s", jobs, res.Closure.Digest, firstRes.Closure.Digest)
		}
		if !maps.EqualFunc(tree, firstTree, bytes.Equal) {
			t.Errorf("Jobs %d: layout contents differ (%d files vs %d)", jobs, len(tree), len(firstTree))
		}
	}
}

func TestPushSplitClosure(t *testing.T) {
	c := closureCache(t)
	for _, tc := range []struct {
		version string
		limit   int
	}{{spec.ClosureVersion, 1500}, {spec.Version, 1800}} {
		t.Run("v"+tc.version, func(t *testing.T) {
			l := openLayout(t)
			res := push(t, l, openCache(t, c.URL(), nil), artifact.PushOptions{ManifestLimit: tc.limit, ClosureVersion: tc.version}, storePath("app"))
			parts := res.Index.Parts
			if tc.version == spec.Version {
				parts = res.Manifest.Parts
			}
			n := len(parts)
			if n < 2 || res.Parts != n {
				t.Fatalf("limit %d: %d parts (result says %d), want a split", tc.limit, n, res.Parts)
			}
			if res.Closure.MediaType != ocispec.MediaTypeImageIndex {
				t.Errorf("closure media type %q, want an index", res.Closure.MediaType)
			}
			for i, p := range parts {
				if len(p.Data) > tc.limit {
					t.Errorf("part %d is %d bytes", i+1, len(p.Data))
				}
				if ok, err := l.Exists(t.Context(), p.Descriptor); !ok || err != nil {
					t.Errorf("part %d not stored", i+1)
				}
			}
			out := t.TempDir()
			pres := pull(t, l, "app", out)
			compareTrees(t, readTree(t, out), cacheFiles(t, c, appClosure...))
			if pres.Closure.Parts != n || pres.Closure.Version != tc.version {
				t.Errorf("pulled closure has %d parts, version %s; want %d, %s", pres.Closure.Parts, pres.Closure.Version, n, tc.version)
			}
			s, err := artifact.Inspect(t.Context(), l, "app", 4)
			if err != nil {
				t.Fatal(err)
			}
			if s.Parts != n || len(s.Paths) != 5 || s.MediaType != ocispec.MediaTypeImageIndex {
				t.Errorf("Inspect: %d parts, %d paths, %s", s.Parts, len(s.Paths), s.MediaType)
			}
		})
	}
}

// TestPushFailureLeavesNoClosureTag: SPEC.md section 6. A path whose NAR
// does not match its narinfo fails the push; the closure is not tagged,
// completed paths keep their tags, and a later push reuses them.
func TestPushFailureLeavesNoClosureTag(t *testing.T) {
	tests := []struct {
		name string
		edit func(*narinfo.NarInfo)
	}{
		{"NarHash", func(n *narinfo.NarInfo) { n.NarHash = "sha256:" + nix32([]byte("wrong")) }},
		{"FileSize", func(n *narinfo.NarInfo) { n.FileSize++ }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := closureCache(t)
			good := *c.Infos[storePath("lib")]
			bad := good
			tt.edit(&bad)
			c.WriteInfo(&bad)

			l := openLayout(t)
			_, err := artifact.Push(t.Context(), l, openCache(t, c.URL(), nil), []string{storePath("app")}, artifact.PushOptions{Jobs: 1, TempDir: t.TempDir()})
			if !errors.Is(err, artifact.ErrHashMismatch) {
				t.Fatalf("Push error = %v, want ErrHashMismatch", err)
			}
			if _, err := l.Resolve(t.Context(), "app"); !errors.Is(err, errdef.ErrNotFound) {
				t.Errorf("closure tagged after a failed push (%v)", err)
			}
			if _, err := l.Resolve(t.Context(), spec.PathTag(good.StorePath)); !errors.Is(err, errdef.ErrNotFound) {
				t.Errorf("the failing path was tagged (%v)", err)
			}
			stored := 0
			for _, n := range appClosure {
				art, err := artifact.FetchPath(t.Context(), l, storePath(n))
				if errors.Is(err, errdef.ErrNotFound) {
					continue
				}
				if err != nil {
					t.Errorf("%s: %v", n, err)
					continue
				}
				stored++
				if ok, _ := l.Exists(t.Context(), art.NAR); !ok {
					t.Errorf("%s tagged without its NAR", n)
				}
			}
			if entries, _ := os.ReadDir(filepath.Dir(l.Dir())); len(entries) != 1 {
				t.Errorf("files left next to the layout: %v", entries)
			}

			c.WriteInfo(&good)
			res := push(t, l, openCache(t, c.URL(), nil), artifact.PushOptions{}, storePath("app"))
			if res.Reused != stored || res.Packed != 5-stored {
				t.Errorf("push after fixing: Reused %d, Packed %d; want %d, %d", res.Reused, res.Packed, stored, 5-stored)
			}
		})
	}
}

func TestPushInvalid(t *testing.T) {
	c := closureCache(t)
	l := openLayout(t)
	src := openCache(t, c.URL(), nil)
	tests := []struct {
		name string
		args []string
		opts artifact.PushOptions
	}{
		{"no paths", nil, artifact.PushOptions{}},
		{"invalid tag", []string{storePath("app")}, artifact.PushOptions{Tag: "-bad"}},
		{"digest as tag", []string{storePath("app")}, artifact.PushOptions{Tag: digest.FromString("x").String()}},
		{"not a store path", []string{"/etc/passwd"}, artifact.PushOptions{}},
		{"not in the cache", []string{storePath("ghost")}, artifact.PushOptions{}},
	}
	for _, tt := range tests {
		tt.opts.TempDir = t.TempDir()
		if _, err := artifact.Push(t.Context(), l, src, tt.args, tt.opts); err == nil {
			t.Errorf("%s: Push succeeded", tt.name)
		}
	}
	var tags []string
	l.Tags(t.Context(), "", func(ts []string) error { tags = append(tags, ts...); return nil })
	if len(tags) != 0 {
		t.Errorf("failed pushes left tags %v", tags)
	}
}

// checksHeldUntilUpload holds the existence check of one path until a
// NAR blob has been pushed.
type checksHeldUntilUpload struct {
	backend.Target
	held     string // tag
	uploaded chan struct{}
	once     sync.Once
}

func (c *checksHeldUntilUpload) FetchReference(ctx context.Context, ref string) (ocispec.Descriptor, io.ReadCloser, error) {
	if ref == c.held {
		select {
		case <-c.uploaded:
		case <-ctx.Done():
			return ocispec.Descriptor{}, nil, ctx.Err()
		}
	}
	return c.Target.FetchReference(ctx, ref)
}

func (c *checksHeldUntilUpload) Push(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	err := c.Target.Push(ctx, desc, r)
	if _, nar := spec.CompressionOfMediaType(desc.MediaType); nar && err == nil {
		c.once.Do(func() { close(c.uploaded) })
	}
	return err
}

// TestPushPacksWhileChecking: a path found missing is packed and uploaded
// while the other paths are still being checked (largest first), rather
// than after every check: with a registry far away, the checks would
// otherwise come before the first NAR is read. Here the smallest path's
// check waits for a NAR upload, which the push would never make if
// packing waited for the checks.
func TestPushPacksWhileChecking(t *testing.T) {
	c := closureCache(t)
	smallest := ""
	for _, n := range appClosure {
		p := storePath(n)
		if smallest == "" || c.Infos[p].NarSize < c.Infos[smallest].NarSize {
			smallest = p
		}
	}
	l := &checksHeldUntilUpload{Target: openLayout(t), held: spec.PathTag(smallest), uploaded: make(chan struct{})}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	res, err := artifact.Push(ctx, l, openCache(t, c.URL(), nil), []string{storePath("app")}, artifact.PushOptions{Jobs: 1, TempDir: t.TempDir()})
	if err != nil {
		t.Fatalf("push with one check held until an upload: %v", err)
	}
	if res.Packed != len(appClosure) {
		t.Errorf("packed %d paths, want %d", res.Packed, len(appClosure))
	}
}
