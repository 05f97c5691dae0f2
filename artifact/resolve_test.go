package artifact_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/spec"
)

// pushManifest stores data as a manifest or index of mediaType in l,
// tagged tag if not "".
func pushManifest(t testing.TB, l backend.Target, mediaType string, data []byte, tag string) ocispec.Descriptor {
	t.Helper()
	d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	var err error
	if tag != "" {
		err = l.PushReference(context.Background(), d, bytes.NewReader(data), tag)
	} else if err = l.Push(context.Background(), d, bytes.NewReader(data)); errors.Is(err, errdef.ErrAlreadyExists) {
		err = nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// storedIndex reads the closure index tag names in l.
func storedIndex(t testing.TB, l backend.Target, tag string) ocispec.Index {
	t.Helper()
	_, data, err := backend.FetchManifest(context.Background(), l, tag)
	if err != nil {
		t.Fatal(err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		t.Fatal(err)
	}
	return idx
}

func marshal(t testing.TB, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestResolvePathChecksClaims: a tag, or a closure entry, that leads to
// another path's manifest is refused, naming what it leads to.
func TestResolvePathChecksClaims(t *testing.T) {
	ctx := t.Context()
	l := fixture.Layout(t)
	_, arts := fixture.Synthetic(t, l, "c", spec.ClosureVersion, "1", "claim-a", "claim-b")
	a, b := arts[0], arts[1]
	ha, hb := spec.PathTag(a.Info.StorePath), spec.PathTag(b.Info.StorePath)
	// A hostile tag: b's hash names a's manifest.
	data, err := backend.FetchAll(ctx, l, a.Manifest, backend.MaxManifestRead)
	if err != nil {
		t.Fatal(err)
	}
	pushManifest(t, l, ocispec.MediaTypeImageManifest, data, hb)

	for _, tc := range []struct {
		name  string
		claim artifact.PathClaim
		want  error  // nil: resolves to a
		words string // in the error
	}{
		{"tag", artifact.PathClaim{Hash: ha}, nil, ""},
		{"tag and store path", artifact.PathClaim{Hash: ha, StorePath: a.Info.StorePath}, nil, ""},
		{"manifest", artifact.PathClaim{Hash: ha, StorePath: a.Info.StorePath, Manifest: a.Manifest}, nil, ""},
		{"tag of another path", artifact.PathClaim{Hash: hb}, artifact.ErrClaimMismatch, "tag " + hb + " holds " + a.Info.StorePath},
		{"other store path", artifact.PathClaim{Hash: ha, StorePath: b.Info.StorePath}, artifact.ErrClaimMismatch, b.Info.StorePath},
		{"entry naming another path's manifest", artifact.PathClaim{Hash: hb, StorePath: b.Info.StorePath, Manifest: a.Manifest},
			artifact.ErrClaimMismatch, "manifest " + a.Manifest.Digest.String()},
		{"not a hash part", artifact.PathClaim{Hash: "../etc"}, artifact.ErrNotArtifact, "../etc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := artifact.ResolvePath(ctx, l, tc.claim)
			if tc.want == nil {
				if err != nil || got.Manifest.Digest != a.Manifest.Digest {
					t.Errorf("ResolvePath = %s, %v; want %s", got.Manifest.Digest, err, a.Manifest.Digest)
				}
				return
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.words) {
				t.Errorf("ResolvePath = %v; want %v naming %q", err, tc.want, tc.words)
			}
		})
	}
}

// countingFetches counts the manifests and indexes fetched by digest.
type countingFetches struct {
	backend.Target
	fetched atomic.Int64
}

func (c *countingFetches) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	c.fetched.Add(1)
	return c.Target.Fetch(ctx, d)
}

// TestClosureReaderRefuses: a closure index that lies about its entries,
// or lists more than the reader's bounds, is refused with a clear error,
// and an oversized one before its parts are fetched.
func TestClosureReaderRefuses(t *testing.T) {
	ctx := t.Context()
	l := fixture.Layout(t)
	_, arts := fixture.Synthetic(t, l, "good", spec.ClosureVersion, "1", "cr-a", "cr-b", "cr-c")
	slices.SortFunc(arts, func(a, b artifact.PathArtifact) int { return strings.Compare(a.Info.StorePath, b.Info.StorePath) })
	good := storedIndex(t, l, "good") // entries in store-path order, as arts

	edit := func(tag string, f func(*ocispec.Index)) {
		idx := good
		idx.Manifests = append([]ocispec.Descriptor(nil), good.Manifests...)
		idx.Annotations = map[string]string{}
		for k, v := range good.Annotations {
			idx.Annotations[k] = v
		}
		for i := range idx.Manifests {
			a := map[string]string{}
			for k, v := range idx.Manifests[i].Annotations {
				a[k] = v
			}
			idx.Manifests[i].Annotations = a
		}
		f(&idx)
		pushManifest(t, l, ocispec.MediaTypeImageIndex, marshal(t, idx), tag)
	}
	// The second entry names the first's manifest (and drops its
	// narinfo, so it must be fetched).
	edit("swapped", func(idx *ocispec.Index) {
		idx.Manifests[1].Digest, idx.Manifests[1].Size = arts[0].Manifest.Digest, arts[0].Manifest.Size
		delete(idx.Manifests[1].Annotations, spec.AnnotationNarInfo)
	})
	// The second entry carries the first's narinfo.
	edit("other-narinfo", func(idx *ocispec.Index) {
		idx.Manifests[1].Annotations[spec.AnnotationNarInfo] = idx.Manifests[0].Annotations[spec.AnnotationNarInfo]
	})
	edit("bad-path", func(idx *ocispec.Index) {
		idx.Manifests[1].Annotations[spec.AnnotationStorePath] = "/nix/store/../../etc/passwd"
	})
	edit("twice", func(idx *ocispec.Index) {
		idx.Manifests[1] = idx.Manifests[0]
	})
	edit("too-many", func(idx *ocispec.Index) {
		idx.Annotations[spec.AnnotationPathCount] = "2" // lists 3
	})

	for _, tc := range []struct {
		tag        string
		r          artifact.ClosureReader
		readErr    error // from Read
		pathsErr   error // from ClosurePaths
		words      string
		pathsFromB bool // the second entry gives its path without a fetch
	}{
		{tag: "good", pathsFromB: true},
		{tag: "swapped", pathsErr: artifact.ErrClaimMismatch, words: arts[0].Manifest.Digest.String()},
		{tag: "other-narinfo", pathsFromB: false},
		{tag: "bad-path", readErr: artifact.ErrNotArtifact, words: "/nix/store/../../etc"},
		{tag: "twice", readErr: artifact.ErrNotArtifact, words: "twice"},
		{tag: "too-many", readErr: artifact.ErrTooLarge, words: "more than 2"},
		{tag: "good", r: artifact.ClosureReader{MaxPaths: 2}, readErr: artifact.ErrTooLarge, words: "3 store paths"},
	} {
		t.Run(tc.tag+"/"+strconv.Itoa(tc.r.MaxPaths), func(t *testing.T) {
			c, err := tc.r.Read(ctx, l, tc.tag)
			if tc.readErr != nil {
				if !errors.Is(err, tc.readErr) || !strings.Contains(err.Error(), tc.words) || !strings.Contains(err.Error(), tc.tag) {
					t.Errorf("Read = %v; want %v naming %s and %q", err, tc.readErr, tc.tag, tc.words)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Members[1].Path != nil; got != tc.pathsFromB {
				t.Errorf("second path from its entry: %v, want %v", got, tc.pathsFromB)
			}
			paths, err := artifact.ClosurePaths(ctx, l, c, 4)
			if tc.pathsErr != nil {
				if !errors.Is(err, tc.pathsErr) || !strings.Contains(err.Error(), tc.words) {
					t.Errorf("ClosurePaths = %v; want %v naming %q", err, tc.pathsErr, tc.words)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range paths {
				if p.Manifest.Digest != arts[i].Manifest.Digest {
					t.Errorf("path %d: %s, want %s", i, p.Info.StorePath, arts[i].Info.StorePath)
				}
			}
		})
	}
}

// TestClosureReaderBoundsParts: an index listing more parts than the
// reader's bound is refused before any part is fetched, and one whose
// parts list more entries than it says stops at the first part over.
func TestClosureReaderBoundsParts(t *testing.T) {
	ctx := t.Context()
	l := fixture.Layout(t)
	fixture.Synthetic(t, l, "good", spec.ClosureVersion, "1", "bp-a", "bp-b", "bp-c")
	good := storedIndex(t, l, "good")

	// Parts of one entry each (the last with nix-cache-info too).
	var parts []ocispec.Descriptor
	for i, e := range good.Manifests[:3] {
		entries := []ocispec.Descriptor{e}
		if i == 2 {
			entries = append(entries, good.Manifests[3])
		}
		part := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, ArtifactType: spec.ArtifactTypeClosurePartV2, Manifests: entries,
			Annotations: map[string]string{spec.AnnotationVersion: "2", spec.AnnotationPart: fmt.Sprintf("%d/3", i+1)}}
		part.SchemaVersion = 2
		d := pushManifest(t, l, ocispec.MediaTypeImageIndex, marshal(t, part), "")
		d.ArtifactType = spec.ArtifactTypeClosurePartV2
		parts = append(parts, d)
	}
	top := func(tag, count string, parts []ocispec.Descriptor) {
		idx := good
		idx.Manifests = parts
		idx.Annotations = map[string]string{spec.AnnotationVersion: "2", spec.AnnotationRoots: good.Annotations[spec.AnnotationRoots], spec.AnnotationPathCount: count}
		pushManifest(t, l, ocispec.MediaTypeImageIndex, marshal(t, idx), tag)
	}
	top("split", "3", parts)
	top("says-one", "1", parts)
	many := make([]ocispec.Descriptor, 0, 1000)
	for range 1000 {
		many = append(many, parts[0])
	}
	top("many-parts", "3", many)

	c := &countingFetches{Target: l}
	cl, err := artifact.ReadClosure(ctx, c, "split")
	if err != nil || len(cl.Members) != 3 || cl.Parts != 3 || c.fetched.Load() != 3 {
		t.Fatalf("split closure: %v, %d parts fetched; want 3 members in 3 parts", err, c.fetched.Load())
	}
	c.fetched.Store(0)
	_, err = artifact.ReadClosure(ctx, c, "many-parts")
	if !errors.Is(err, artifact.ErrTooLarge) || !strings.Contains(err.Error(), "1000 parts") || c.fetched.Load() != 0 {
		t.Errorf("1000 parts: %v after %d fetches; want ErrTooLarge before any", err, c.fetched.Load())
	}
	c.fetched.Store(0)
	_, err = artifact.ReadClosure(ctx, c, "says-one")
	if !errors.Is(err, artifact.ErrTooLarge) || c.fetched.Load() != 2 {
		t.Errorf("parts listing more paths than said: %v after %d parts; want ErrTooLarge at the second", err, c.fetched.Load())
	}
}
