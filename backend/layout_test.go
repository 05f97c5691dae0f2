package backend_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/internal/fixture"
)

var (
	_ backend.Target            = (*backend.Layout)(nil)
	_ oras.Target               = (*backend.Layout)(nil)
	_ registry.TagLister        = (*backend.Layout)(nil)
	_ backend.BatchTagger       = (*backend.Layout)(nil)
	_ registry.ReferenceFetcher = (*backend.Layout)(nil)
	_ registry.ReferencePusher  = (*backend.Layout)(nil)
)

// helperEnv selects the helper mode of the test binary: a child process
// that tags manifests in a layout (see TestLayoutConcurrentProcesses).
const helperEnv = "NIXOCI_TARGET_TEST_HELPER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(helperEnv); spec != "" {
		if err := tagHelper(spec); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// tagHelper runs in a child process: spec is "DIR ID COUNT"; it stores
// COUNT manifests and tags each as p<ID>-<i>, one index rewrite at a time.
func tagHelper(spec string) error {
	f := strings.Fields(spec)
	if len(f) != 3 {
		return fmt.Errorf("bad spec %q", spec)
	}
	count, err := strconv.Atoi(f[2])
	if err != nil {
		return err
	}
	l, err := backend.OpenLayout(f[0], false)
	if err != nil {
		return err
	}
	ctx := context.Background()
	for i := range count {
		tag := fmt.Sprintf("p%s-%03d", f[1], i)
		desc, data := manifestFor(tag)
		if err := l.Push(ctx, desc, bytes.NewReader(data)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
			return err
		}
		if err := l.Tag(ctx, desc, tag); err != nil {
			return err
		}
	}
	return nil
}

// manifestFor is a small image manifest unique to name.
func manifestFor(name string) (ocispec.Descriptor, []byte) {
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: "application/vnd.test",
		Config:       ocispec.DescriptorEmptyJSON,
		Layers:       []ocispec.Descriptor{},
		Annotations:  map[string]string{"name": name},
	}
	data, _ := json.Marshal(m)
	return ocispec.Descriptor{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: m.ArtifactType,
		Digest:       digest.FromBytes(data),
		Size:         int64(len(data)),
	}, data
}

// pushManifest stores the manifest for name in l without tagging it.
func pushManifest(t testing.TB, l *backend.Layout, name string) ocispec.Descriptor {
	t.Helper()
	desc, data := manifestFor(name)
	if err := l.Push(context.Background(), desc, bytes.NewReader(data)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		t.Fatal(err)
	}
	return desc
}

var newLayout = fixture.Layout

// readIndex parses index.json strictly.
func readIndex(t testing.TB, dir string) ocispec.Index {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx ocispec.Index
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&idx); err != nil {
		t.Fatalf("index.json is not a valid index: %v\n%s", err, data)
	}
	if idx.SchemaVersion != 2 || idx.MediaType != ocispec.MediaTypeImageIndex {
		t.Errorf("index.json: schemaVersion %d, mediaType %q", idx.SchemaVersion, idx.MediaType)
	}
	return idx
}

func indexTags(idx ocispec.Index) []string {
	var tags []string
	for _, d := range idx.Manifests {
		if name, ok := d.Annotations[ocispec.AnnotationRefName]; ok {
			tags = append(tags, name)
		}
	}
	return tags
}

func TestOpenLayout(t *testing.T) {
	base := t.TempDir()

	missing := filepath.Join(base, "missing")
	if _, err := backend.OpenLayout(missing, false); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("OpenLayout(missing, false) error = %v, want errdef.ErrNotFound", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenLayout without create made %s (stat: %v)", missing, err)
	}

	notLayout := filepath.Join(base, "plain")
	if err := os.Mkdir(notLayout, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := backend.OpenLayout(notLayout, false); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("OpenLayout(dir without oci-layout, false) error = %v, want errdef.ErrNotFound", err)
	}

	dir := filepath.Join(base, "new", "layout")
	l, err := backend.OpenLayout(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if l.Dir() != dir {
		t.Errorf("Dir() = %q, want %q", l.Dir(), dir)
	}
	data, err := os.ReadFile(filepath.Join(dir, "oci-layout"))
	if err != nil {
		t.Fatal(err)
	}
	var layout ocispec.ImageLayout
	if err := json.Unmarshal(data, &layout); err != nil || layout.Version != ocispec.ImageLayoutVersion {
		t.Errorf("oci-layout = %s (%v), want version %s", data, err, ocispec.ImageLayoutVersion)
	}
	if idx := readIndex(t, dir); len(idx.Manifests) != 0 {
		t.Errorf("new index.json lists %d manifests, want 0", len(idx.Manifests))
	}
	if raw, _ := os.ReadFile(filepath.Join(dir, "index.json")); !bytes.Contains(raw, []byte(`"manifests":[]`)) {
		t.Errorf("new index.json %s has no empty manifests list", raw)
	}
	if fi, err := os.Stat(filepath.Join(dir, "blobs", "sha256")); err != nil || !fi.IsDir() {
		t.Errorf("blobs/sha256 missing: %v", err)
	}

	// Opening again, with or without create, keeps what is there.
	desc := pushManifest(t, l, "keep")
	if err := l.Tag(t.Context(), desc, "keep"); err != nil {
		t.Fatal(err)
	}
	for _, create := range []bool{false, true} {
		l2, err := backend.OpenLayout(dir, create)
		if err != nil {
			t.Fatalf("reopening (create=%v): %v", create, err)
		}
		if got, err := l2.Resolve(t.Context(), "keep"); err != nil || got.Digest != desc.Digest {
			t.Errorf("after reopening (create=%v): Resolve(keep) = %v, %v", create, got.Digest, err)
		}
	}

	// create on a directory with an index.json but no oci-layout keeps the index.
	partial := filepath.Join(base, "partial")
	if err := os.MkdirAll(partial, 0o755); err != nil {
		t.Fatal(err)
	}
	oldIndex := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + desc.Digest.String() + `","size":1,"annotations":{"org.opencontainers.image.ref.name":"old"}}]}`
	if err := os.WriteFile(filepath.Join(partial, "index.json"), []byte(oldIndex), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := backend.OpenLayout(partial, true); err != nil {
		t.Fatal(err)
	}
	if got := indexTags(readIndex(t, partial)); !slices.Equal(got, []string{"old"}) {
		t.Errorf("create replaced an existing index.json: tags %v, want [old]", got)
	}
}

func TestLayoutBlobs(t *testing.T) {
	ctx := t.Context()
	l := newLayout(t)
	data := []byte("some blob content")
	desc := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(data), Size: int64(len(data))}

	if ok, err := l.Exists(ctx, desc); err != nil || ok {
		t.Fatalf("Exists before Push = %v, %v; want false, nil", ok, err)
	}
	if _, err := l.Fetch(ctx, desc); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("Fetch before Push: error = %v, want errdef.ErrNotFound", err)
	}
	if err := l.Push(ctx, desc, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if ok, err := l.Exists(ctx, desc); err != nil || !ok {
		t.Errorf("Exists after Push = %v, %v; want true, nil", ok, err)
	}
	rc, err := l.Fetch(ctx, desc)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("Fetch = %q, %v; want %q", got, err, data)
	}
	if err := l.Push(ctx, desc, bytes.NewReader(data)); !errors.Is(err, errdef.ErrAlreadyExists) {
		t.Errorf("second Push error = %v, want errdef.ErrAlreadyExists", err)
	}
	onDisk, err := os.ReadFile(filepath.Join(l.Dir(), "blobs", "sha256", desc.Digest.Encoded()))
	if err != nil || !bytes.Equal(onDisk, data) {
		t.Errorf("blob file = %q, %v; want %q", onDisk, err, data)
	}

	// Content that does not match its descriptor is refused and not stored.
	other := []byte("other content")
	bad := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(other), Size: int64(len(other))}
	if err := l.Push(ctx, bad, bytes.NewReader([]byte("not the content"))); err == nil {
		t.Error("Push of content not matching its digest succeeded")
	}
	if ok, _ := l.Exists(ctx, bad); ok {
		t.Error("mismatched content was stored")
	}
}

func TestLayoutResolve(t *testing.T) {
	ctx := t.Context()
	l := newLayout(t)
	desc, data := manifestFor("one")
	if err := l.PushReference(ctx, desc, bytes.NewReader(data), "v1"); err != nil {
		t.Fatal(err)
	}
	untagged := pushManifest(t, l, "untagged")
	blob := []byte("not a manifest")
	blobDesc := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	if err := l.Push(ctx, blobDesc, bytes.NewReader(blob)); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		ref  string
		want ocispec.Descriptor
	}{
		{"v1", desc},
		{desc.Digest.String(), desc},
		{untagged.Digest.String(), ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: untagged.Digest, Size: untagged.Size}},
	}
	for _, tt := range tests {
		got, err := l.Resolve(ctx, tt.ref)
		if err != nil {
			t.Errorf("Resolve(%s): %v", tt.ref, err)
			continue
		}
		if got.Digest != tt.want.Digest || got.Size != tt.want.Size || got.MediaType != tt.want.MediaType || got.ArtifactType != tt.want.ArtifactType {
			t.Errorf("Resolve(%s) = %+v, want %+v", tt.ref, got, tt.want)
		}
		if len(got.Annotations) != 0 {
			t.Errorf("Resolve(%s) kept index annotations %v", tt.ref, got.Annotations)
		}
		gd, rc, err := l.FetchReference(ctx, tt.ref)
		if err != nil {
			t.Errorf("FetchReference(%s): %v", tt.ref, err)
			continue
		}
		content, _ := io.ReadAll(rc)
		rc.Close()
		if gd.Digest != tt.want.Digest || digest.FromBytes(content) != tt.want.Digest {
			t.Errorf("FetchReference(%s) = %s with content %s, want %s", tt.ref, gd.Digest, digest.FromBytes(content), tt.want.Digest)
		}
	}

	for _, ref := range []string{"v2", blobDesc.Digest.String(), digest.FromString("absent").String()} {
		if _, err := l.Resolve(ctx, ref); !errors.Is(err, errdef.ErrNotFound) {
			t.Errorf("Resolve(%s) error = %v, want errdef.ErrNotFound", ref, err)
		}
		if _, _, err := l.FetchReference(ctx, ref); !errors.Is(err, errdef.ErrNotFound) {
			t.Errorf("FetchReference(%s) error = %v, want errdef.ErrNotFound", ref, err)
		}
	}
}

func TestLayoutTagMany(t *testing.T) {
	ctx := t.Context()
	l := newLayout(t)
	a, b, c := pushManifest(t, l, "a"), pushManifest(t, l, "b"), pushManifest(t, l, "c")

	if err := l.Tag(ctx, a, "zeta"); err != nil {
		t.Fatal(err)
	}
	// An untagged entry written by another tool is kept.
	idx := readIndex(t, l.Dir())
	untagged := ocispec.Descriptor{MediaType: c.MediaType, Digest: c.Digest, Size: c.Size, Annotations: map[string]string{"other": "tool"}}
	idx.Manifests = append(idx.Manifests, untagged)
	raw, _ := json.Marshal(idx)
	if err := os.WriteFile(filepath.Join(l.Dir(), "index.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}

	if err := l.TagMany(ctx, []backend.Tagged{
		{Descriptor: b, Tag: "beta"},
		{Descriptor: a, Tag: "alpha"},
		{Descriptor: c, Tag: "mid"},
	}); err != nil {
		t.Fatal(err)
	}
	idx = readIndex(t, l.Dir())
	if got, want := indexTags(idx), []string{"alpha", "beta", "mid", "zeta"}; !slices.Equal(got, want) {
		t.Errorf("index.json tags = %v, want %v (sorted, earlier tags kept)", got, want)
	}
	if n := len(idx.Manifests); n != 5 {
		t.Fatalf("index.json has %d entries, want 5", n)
	}
	if last := idx.Manifests[4]; last.Digest != c.Digest || last.Annotations["other"] != "tool" {
		t.Errorf("untagged entry not kept: last entry %+v", last)
	}
	for _, d := range idx.Manifests[:4] {
		if len(d.Annotations) != 1 {
			t.Errorf("tagged entry %s has annotations %v, want only the ref name", d.Digest, d.Annotations)
		}
	}

	// Moving a tag.
	if err := l.Tag(ctx, c, "alpha"); err != nil {
		t.Fatal(err)
	}
	if got, err := l.Resolve(ctx, "alpha"); err != nil || got.Digest != c.Digest {
		t.Errorf("after moving: Resolve(alpha) = %s, %v; want %s", got.Digest, err, c.Digest)
	}
	if got := indexTags(readIndex(t, l.Dir())); !slices.Equal(got, []string{"alpha", "beta", "mid", "zeta"}) {
		t.Errorf("after moving a tag: tags %v", got)
	}

	var listed []string
	if err := l.Tags(ctx, "beta", func(tags []string) error { listed = append(listed, tags...); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := []string{"mid", "zeta"}; !slices.Equal(listed, want) {
		t.Errorf("Tags(last=beta) = %v, want %v", listed, want)
	}
}

func TestLayoutTagErrors(t *testing.T) {
	ctx := t.Context()
	l := newLayout(t)
	stored := pushManifest(t, l, "stored")
	if err := l.Tag(ctx, stored, "ok"); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(l.Dir(), "index.json"))
	notStored, _ := manifestFor("not stored")

	tests := []struct {
		desc string
		tags []backend.Tagged
		want error
	}{
		{"manifest not stored", []backend.Tagged{{Descriptor: notStored, Tag: "x"}}, errdef.ErrNotFound},
		{"one of several not stored", []backend.Tagged{{Descriptor: stored, Tag: "y"}, {Descriptor: notStored, Tag: "x"}}, errdef.ErrNotFound},
		{"empty tag", []backend.Tagged{{Descriptor: stored, Tag: ""}}, errdef.ErrInvalidReference},
		{"digest as tag", []backend.Tagged{{Descriptor: stored, Tag: stored.Digest.String()}}, errdef.ErrInvalidReference},
	}
	for _, tt := range tests {
		if err := l.TagMany(ctx, tt.tags); !errors.Is(err, tt.want) {
			t.Errorf("%s: TagMany error = %v, want %v", tt.desc, err, tt.want)
		}
	}
	if err := l.Tag(ctx, notStored, "x"); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("Tag(not stored) error = %v, want errdef.ErrNotFound", err)
	}
	after, _ := os.ReadFile(filepath.Join(l.Dir(), "index.json"))
	if !bytes.Equal(before, after) {
		t.Errorf("failed tagging changed index.json:\n%s\n->\n%s", before, after)
	}
}

// TestLayoutConcurrentWriters: separate Layout values on one directory, as
// separate processes have, tag at once; no tag is lost and a reader never
// sees a broken index.json.
func TestLayoutConcurrentWriters(t *testing.T) {
	const writers, perWriter = 12, 8
	dir := newLayout(t).Dir()
	ctx := t.Context()

	stop := make(chan struct{})
	var reads, bad atomic.Int64
	var readerErr atomic.Value
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			data, err := os.ReadFile(filepath.Join(dir, "index.json"))
			var idx ocispec.Index
			if err == nil {
				err = json.Unmarshal(data, &idx)
			}
			reads.Add(1)
			if err != nil {
				bad.Add(1)
				readerErr.Store(fmt.Sprintf("%v: %q", err, data))
			}
		}
	}()

	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := backend.OpenLayout(dir, true)
			if err != nil {
				errs <- err
				return
			}
			for i := range perWriter {
				tag := fmt.Sprintf("w%02d-%d", w, i)
				desc, data := manifestFor(tag)
				if err := l.Push(ctx, desc, bytes.NewReader(data)); err != nil {
					errs <- err
					return
				}
				if i%2 == 0 {
					err = l.Tag(ctx, desc, tag)
				} else {
					err = l.TagMany(ctx, []backend.Tagged{{Descriptor: desc, Tag: tag}, {Descriptor: desc, Tag: tag + "-alias"}})
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-readerDone
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := bad.Load(); n > 0 {
		t.Errorf("reader saw invalid index.json %d of %d times; last: %v", n, reads.Load(), readerErr.Load())
	}

	idx := readIndex(t, dir)
	tags := indexTags(idx)
	if !slices.IsSorted(tags) {
		t.Errorf("index.json tags not sorted: %v", tags)
	}
	if want := writers * (perWriter + perWriter/2); len(tags) != want {
		t.Errorf("index.json has %d tags, want %d", len(tags), want)
	}
	l, err := backend.OpenLayout(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	for w := range writers {
		for i := range perWriter {
			tag := fmt.Sprintf("w%02d-%d", w, i)
			want, _ := manifestFor(tag)
			if got, err := l.Resolve(ctx, tag); err != nil || got.Digest != want.Digest {
				t.Errorf("Resolve(%s) = %s, %v; want %s", tag, got.Digest, err, want.Digest)
			}
		}
	}
	if matches, _ := filepath.Glob(filepath.Join(dir, ".index.json.tmp-*")); len(matches) > 0 {
		t.Errorf("temporary files left behind: %v", matches)
	}
}

// TestLayoutConcurrentProcesses re-executes the test binary as several
// processes tagging the same layout at once.
func TestLayoutConcurrentProcesses(t *testing.T) {
	const procs, perProc = 6, 15
	dir := newLayout(t).Dir()
	cmds := make([]*exec.Cmd, procs)
	outs := make([]bytes.Buffer, procs)
	for p := range procs {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLayoutConcurrentProcesses$", "-test.count=1")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %d", helperEnv, dir, p, perProc))
		cmd.Stdout, cmd.Stderr = &outs[p], &outs[p]
		cmds[p] = cmd
	}
	for _, cmd := range cmds {
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for p, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper %d: %v\n%s", p, err, outs[p].String())
		}
	}

	tags := indexTags(readIndex(t, dir))
	var want []string
	for p := range procs {
		for i := range perProc {
			want = append(want, fmt.Sprintf("p%d-%03d", p, i))
		}
	}
	slices.Sort(want)
	if !slices.Equal(tags, want) {
		t.Errorf("after %d processes: %d tags, want %d\n got: %v\nwant: %v", procs, len(tags), len(want), tags, want)
	}
	l, err := backend.OpenLayout(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range want {
		wantDesc, _ := manifestFor(tag)
		if got, err := l.Resolve(t.Context(), tag); err != nil || got.Digest != wantDesc.Digest {
			t.Errorf("Resolve(%s) = %s, %v; want %s", tag, got.Digest, err, wantDesc.Digest)
		}
	}
}

// TestLayoutConcurrentCreate: writers that find no layout create it at
// once (two first pushes to the default store, say). Spec section 6 says
// several writers may share one layout directory.
func TestLayoutConcurrentCreate(t *testing.T) {
	const rounds, writers = 20, 6
	ctx := t.Context()
	lost := 0
	for range rounds {
		dir := filepath.Join(t.TempDir(), "layout")
		var wg sync.WaitGroup
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l, err := backend.OpenLayout(dir, true)
				if err != nil {
					t.Error(err)
					return
				}
				tag := fmt.Sprintf("w%d", w)
				desc, data := manifestFor(tag)
				if err := l.Push(ctx, desc, bytes.NewReader(data)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
					t.Error(err)
					return
				}
				if err := l.Tag(ctx, desc, tag); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		lost += writers - len(indexTags(readIndex(t, dir)))
	}
	if lost > 0 {
		t.Errorf("%d of %d tags lost when %d writers created the same layout at once", lost, rounds*writers, writers)
	}
}

func TestLayoutResolveBlobAndPing(t *testing.T) {
	ctx := t.Context()
	l := newLayout(t)
	data := []byte("blob for ResolveBlob")
	d := digest.FromBytes(data)
	if _, err := l.ResolveBlob(ctx, d); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("ResolveBlob(missing) error = %v, want errdef.ErrNotFound", err)
	}
	if err := l.Push(ctx, ocispec.Descriptor{MediaType: "application/octet-stream", Digest: d, Size: int64(len(data))}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	got, err := l.ResolveBlob(ctx, d)
	if err != nil || got.Digest != d || got.Size != int64(len(data)) {
		t.Errorf("ResolveBlob = %+v, %v; want digest %s, size %d", got, err, d, len(data))
	}
	for _, bad := range []digest.Digest{"sha256:zz", "sha256:../../../etc/passwd", ""} {
		if _, err := l.ResolveBlob(ctx, bad); !errors.Is(err, errdef.ErrInvalidDigest) {
			t.Errorf("ResolveBlob(%q) error = %v, want errdef.ErrInvalidDigest", bad, err)
		}
	}

	if err := l.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
	if err := os.WriteFile(filepath.Join(l.Dir(), "index.json"), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(ctx); err == nil {
		t.Error("Ping of a layout with a corrupt index.json succeeded")
	}
}

// TestLayoutIndexCacheIdentity: Layout caches index.json and re-reads it
// only when (inode, size, mtime) changed. Writers replace index.json by
// rename, so the old inode is freed and ext4 hands it to the next
// temporary file (inodes alternate between two numbers); with coarse
// (jiffy) timestamps, as on kernels without multigrain timestamps, and a
// re-tag that keeps the size, the new index.json looks identical to the
// cached one. This test produces exactly that state (same inode, size and
// mtime, new content) and checks that TagMany, which must start from the
// latest index, does not lose the other writer's tag.
func TestLayoutIndexCacheIdentity(t *testing.T) {
	ctx := t.Context()
	l1 := newLayout(t)
	dir := l1.Dir()
	m1, m2, m3 := pushManifest(t, l1, "m1"), pushManifest(t, l1, "m2"), pushManifest(t, l1, "m3")
	if err := l1.Tag(ctx, m1, "t"); err != nil {
		t.Fatal(err)
	}
	if got, err := l1.Resolve(ctx, "t"); err != nil || got.Digest != m1.Digest {
		t.Fatalf("Resolve(t) = %s, %v", got.Digest, err)
	}

	// Another writer moves t to m2; the result lands in the inode l1 saw,
	// with the same size and mtime.
	index := filepath.Join(dir, "index.json")
	keep := filepath.Join(dir, "keep")
	if err := os.Link(index, keep); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(index)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := backend.OpenLayout(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := l2.Tag(ctx, m2, "t"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(index)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) != st.Size() {
		t.Fatalf("re-tag changed the index size (%d -> %d); the test needs equal sizes", st.Size(), len(data))
	}
	f, err := os.OpenFile(keep, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Chtimes(keep, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(keep, index); err != nil {
		t.Fatal(err)
	}

	// A reader's cached view may lag such an in-place rewrite (nixoci's
	// writers never rewrite in place, and the cached file is kept open so
	// its inode is not reused), but a writer must never lose the tag.
	if err := l1.Tag(ctx, m3, "u"); err != nil {
		t.Fatal(err)
	}
	fresh, _ := backend.OpenLayout(dir, false)
	if got, err := fresh.Resolve(ctx, "t"); err != nil || got.Digest != m2.Digest {
		t.Errorf("after l1 tagged u, t = %s, %v; want %s (another writer's tag lost)", got.Digest, err, m2.Digest)
	}
}

// TestLayoutStoreAgainRenews: storing again a blob or manifest the
// layout holds, unreferenced and old, makes it as new as one written
// now, so that a sweep with a grace period (which deletes only older
// blobs) leaves it to the writer's tag.
func TestLayoutStoreAgainRenews(t *testing.T) {
	ctx := t.Context()
	l := newLayout(t)
	data := []byte("a blob stored long ago")
	blob := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(data), Size: int64(len(data))}
	manifest, mdata := manifestFor("old")
	old := time.Now().Add(-time.Hour)
	for _, c := range []struct {
		desc ocispec.Descriptor
		data []byte
	}{{blob, data}, {manifest, mdata}} {
		if err := l.Push(ctx, c.desc, bytes.NewReader(c.data)); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(l.Dir(), "blobs", "sha256", c.desc.Digest.Encoded())
		if err := os.Chtimes(file, old, old); err != nil {
			t.Fatal(err)
		}
		before := time.Now()
		if err := l.Push(ctx, c.desc, bytes.NewReader(c.data)); !errors.Is(err, errdef.ErrAlreadyExists) {
			t.Errorf("storing %s again: %v, want ErrAlreadyExists", c.desc.MediaType, err)
		}
		if st, err := os.Stat(file); err != nil || st.ModTime().Before(before.Add(-time.Second)) {
			t.Errorf("%s stored again keeps its old time %v (%v)", c.desc.MediaType, st.ModTime(), err)
		}
		var deleted bool
		if err := l.Update(ctx, func(tx *backend.LayoutTx) (err error) {
			_, deleted, err = tx.DeleteBlob(c.desc.Digest, time.Now().Add(-time.Minute))
			return err
		}); err != nil || deleted {
			t.Errorf("a sweep with a grace period of a minute deleted the renewed %s (%v)", c.desc.MediaType, err)
		}
	}
}
