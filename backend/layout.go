package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
)

// Layout is an OCI image-layout directory used as an oras.Target. Blob
// storage is oras-go's oci.Storage; tags live in index.json, which Layout
// rewrites under a lock so that concurrent writers never lose each other's
// tags and readers never see a half-written file.
type Layout struct {
	dir     string
	storage *oci.Storage

	mu    sync.Mutex
	index *layoutIndex // cached parse of index.json
}

var (
	_ oras.Target               = (*Layout)(nil)
	_ registry.ReferencePusher  = (*Layout)(nil)
	_ registry.ReferenceFetcher = (*Layout)(nil)
	_ registry.TagLister        = (*Layout)(nil)
	_ BatchTagger               = (*Layout)(nil)
)

// layoutIndex is a parsed index.json and the file it came from. The file
// stays open so that its inode cannot be reused by a later index.json
// while this parse is cached (inode, size and mtime then identify it).
type layoutIndex struct {
	file *os.File
	stat fs.FileInfo
	tags map[string]ocispec.Descriptor
	all  []ocispec.Descriptor
}

const (
	layoutFile = "oci-layout"
	indexFile  = "index.json"
)

// OpenLayout opens the image layout in dir. With create it makes the
// directory, oci-layout and an empty index.json if they are missing;
// without it a directory that is not a layout is an error wrapping
// errdef.ErrNotFound.
func OpenLayout(dir string, create bool) (*Layout, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(abs, layoutFile)); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("oci:%s: %w", dir, err)
		}
		if !create {
			return nil, fmt.Errorf("oci:%s: not an OCI image layout (no %s file): %w", dir, layoutFile, errdef.ErrNotFound)
		}
		if err := initLayout(abs); err != nil {
			return nil, fmt.Errorf("oci:%s: creating image layout: %w", dir, err)
		}
	}
	storage, err := oci.NewStorage(abs)
	if err != nil {
		return nil, err
	}
	return &Layout{dir: abs, storage: storage}, nil
}

func initLayout(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return err
	}
	// Several processes may create the same layout at once: each file is
	// created only if missing, never replaced (another writer may already
	// hold the lock on oci-layout or have tagged into index.json).
	empty, _ := json.Marshal(newIndex(nil))
	if err := createFileOnce(dir, indexFile, empty); err != nil {
		return err
	}
	layout, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	// oci-layout last: its presence is what marks the directory complete.
	return createFileOnce(dir, layoutFile, layout)
}

// createFileOnce writes name in dir unless it exists: the content goes to
// a temporary file that is then hard-linked into place, which fails
// harmlessly if another process got there first.
func createFileOnce(dir, name string, data []byte) error {
	tmp, err := writeTempFile(dir, "."+name+".new-*", data)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

// writeTempFile writes data to a new file in dir named after pattern (as
// os.CreateTemp), synced and readable by all, and returns its path; on
// failure nothing is left behind.
func writeTempFile(dir, pattern string, data []byte) (string, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	return tmp, nil
}

func newIndex(manifests []ocispec.Descriptor) ocispec.Index {
	if manifests == nil {
		manifests = []ocispec.Descriptor{}
	}
	return ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: manifests,
	}
}

// Dir is the layout's absolute directory.
func (l *Layout) Dir() string { return l.dir }

// Fetch implements content.Fetcher.
func (l *Layout) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	return l.storage.Fetch(ctx, desc)
}

// Exists implements content.Storage.
func (l *Layout) Exists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	return l.storage.Exists(ctx, desc)
}

// Push implements content.Pusher: the content is verified against desc
// while it is written to a temporary file, then renamed into blobs/.
// A manifest with a subject is also listed in the subject's referrers
// index (see ReferrerLister).
func (l *Layout) Push(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	if isManifestType(desc.MediaType) {
		return l.pushManifest(ctx, desc, r)
	}
	err := l.storage.Push(ctx, desc, r)
	if errors.Is(err, errdef.ErrAlreadyExists) && !l.renew(desc.Digest) {
		// Deleted since the store found it: r is unread (the store
		// checks first), store it afresh.
		return l.storage.Push(ctx, desc, r)
	}
	return err
}

// renew gives a blob a writer stores again, found already there, the
// modification time of a blob written now: a collector's sweep deletes
// only unreferenced blobs older than its grace period (SPEC.md 10.2), so
// what the writer is about to tag stays until its tag names it. It
// reports false if the blob is gone; a blob whose time cannot be set
// (a read-only layout) is left as it is.
func (l *Layout) renew(d digest.Digest) bool {
	now := time.Now()
	err := os.Chtimes(l.blobPath(d), now, now)
	return !errors.Is(err, fs.ErrNotExist)
}

// PushReference pushes a manifest and tags it.
func (l *Layout) PushReference(ctx context.Context, desc ocispec.Descriptor, r io.Reader, reference string) error {
	if err := l.Push(ctx, desc, r); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		return err
	}
	return l.Tag(ctx, desc, reference)
}

// Resolve implements content.Resolver for tags and digests.
func (l *Layout) Resolve(ctx context.Context, reference string) (ocispec.Descriptor, error) {
	if d, err := digest.Parse(reference); err == nil {
		return l.resolveDigest(ctx, d)
	}
	idx, err := l.loadIndex()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc, ok := idx.tags[reference]
	if !ok {
		return ocispec.Descriptor{}, fmt.Errorf("oci:%s: tag %s: %w", l.dir, reference, errdef.ErrNotFound)
	}
	return plainDescriptor(desc), nil
}

// resolveDigest finds a manifest by digest: from index.json if listed,
// else by reading the blob's mediaType.
func (l *Layout) resolveDigest(ctx context.Context, d digest.Digest) (ocispec.Descriptor, error) {
	if idx, err := l.loadIndex(); err == nil {
		for _, desc := range idx.all {
			if desc.Digest == d {
				return plainDescriptor(desc), nil
			}
		}
	}
	if err := d.Validate(); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%s: %w", d, errdef.ErrInvalidDigest)
	}
	f, err := os.Open(l.blobPath(d))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return ocispec.Descriptor{}, fmt.Errorf("oci:%s: %s: %w", l.dir, d, errdef.ErrNotFound)
		}
		return ocispec.Descriptor{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	var probe struct {
		MediaType string `json:"mediaType"`
	}
	if err := json.NewDecoder(io.LimitReader(f, MaxManifestRead)).Decode(&probe); err != nil || probe.MediaType == "" {
		return ocispec.Descriptor{}, fmt.Errorf("oci:%s: %s is not a manifest: %w", l.dir, d, errdef.ErrNotFound)
	}
	return ocispec.Descriptor{MediaType: probe.MediaType, Digest: d, Size: st.Size()}, nil
}

// FetchReference resolves a tag or digest and opens the manifest.
func (l *Layout) FetchReference(ctx context.Context, reference string) (ocispec.Descriptor, io.ReadCloser, error) {
	desc, err := l.Resolve(ctx, reference)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	rc, err := l.Fetch(ctx, desc)
	return desc, rc, err
}

// Tag implements content.Tagger.
func (l *Layout) Tag(ctx context.Context, desc ocispec.Descriptor, reference string) error {
	return l.TagMany(ctx, []Tagged{{Descriptor: desc, Tag: reference}})
}

// Tagged pairs a manifest descriptor with a tag.
type Tagged struct {
	Descriptor ocispec.Descriptor
	Tag        string
}

// BatchTagger is implemented by targets that tag many manifests at once
// more cheaply than one at a time (a layout rewrites index.json once).
type BatchTagger interface {
	TagMany(ctx context.Context, tags []Tagged) error
}

// TagMany tags every manifest in one rewrite of index.json. Each manifest
// must already be stored.
func (l *Layout) TagMany(ctx context.Context, tags []Tagged) error {
	for _, t := range tags {
		if err := validTagForLayout(t.Tag); err != nil {
			return err
		}
	}
	unlock, err := l.lock()
	if err != nil {
		return err
	}
	defer unlock()
	// Checked under the lock, which a garbage collection's sweep holds:
	// a manifest found here stays until the tag is written.
	for _, t := range tags {
		if ok, err := l.Exists(ctx, t.Descriptor); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("oci:%s: tagging %s as %s: manifest not stored: %w", l.dir, t.Descriptor.Digest, t.Tag, errdef.ErrNotFound)
		}
	}
	return l.updateIndex(func(byTag map[string]ocispec.Descriptor) error {
		for _, t := range tags {
			d := plainDescriptor(t.Descriptor)
			d.Annotations = map[string]string{ocispec.AnnotationRefName: t.Tag}
			byTag[t.Tag] = d
		}
		return nil
	})
}

// updateIndex rewrites index.json with the tags change leaves in byTag;
// the caller holds the lock.
func (l *Layout) updateIndex(change func(byTag map[string]ocispec.Descriptor) error) error {
	// Under the lock, always read the file afresh: the cache is for
	// readers, and a writer must start from the latest index.
	idx, err := l.readIndex()
	if err != nil {
		return err
	}
	byTag := make(map[string]ocispec.Descriptor, len(idx.tags)+1)
	var untagged []ocispec.Descriptor
	for _, d := range idx.all {
		if name, ok := d.Annotations[ocispec.AnnotationRefName]; ok {
			byTag[name] = d
		} else {
			untagged = append(untagged, d)
		}
	}
	if err := change(byTag); err != nil {
		return err
	}
	names := make([]string, 0, len(byTag))
	for name := range byTag {
		names = append(names, name)
	}
	sort.Strings(names)
	manifests := make([]ocispec.Descriptor, 0, len(names)+len(untagged))
	for _, name := range names {
		manifests = append(manifests, byTag[name])
	}
	manifests = append(manifests, untagged...)
	data, err := json.Marshal(newIndex(manifests))
	if err != nil {
		return err
	}
	if err := writeFileAtomic(l.dir, indexFile, data); err != nil {
		return fmt.Errorf("oci:%s: writing %s: %w", l.dir, indexFile, err)
	}
	return nil
}

// Tags implements registry.TagLister, in sorted order.
func (l *Layout) Tags(ctx context.Context, last string, fn func(tags []string) error) error {
	idx, err := l.loadIndex()
	if err != nil {
		return err
	}
	var tags []string
	for name := range idx.tags {
		if name > last {
			tags = append(tags, name)
		}
	}
	sort.Strings(tags)
	return fn(tags)
}

// loadIndex returns index.json, parsing it again only when the file
// changed since the last call (it is replaced by rename on every write).
func (l *Layout) loadIndex() (*layoutIndex, error) {
	st, err := os.Stat(filepath.Join(l.dir, indexFile))
	if err != nil {
		return nil, fmt.Errorf("oci:%s: %w", l.dir, err)
	}
	l.mu.Lock()
	cached := l.index
	l.mu.Unlock()
	if cached != nil && sameFile(cached.stat, st) {
		return cached, nil
	}
	return l.readIndex()
}

// readIndex parses index.json and caches the result.
func (l *Layout) readIndex() (*layoutIndex, error) {
	f, err := os.Open(filepath.Join(l.dir, indexFile))
	if err != nil {
		return nil, fmt.Errorf("oci:%s: %w", l.dir, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	var index ocispec.Index
	if err := json.NewDecoder(f).Decode(&index); err != nil {
		f.Close()
		return nil, fmt.Errorf("oci:%s: %s is corrupt: %w", l.dir, indexFile, err)
	}
	idx := &layoutIndex{file: f, stat: st, tags: make(map[string]ocispec.Descriptor, len(index.Manifests)), all: index.Manifests}
	for _, d := range index.Manifests {
		if name, ok := d.Annotations[ocispec.AnnotationRefName]; ok {
			idx.tags[name] = d
		}
	}
	l.mu.Lock()
	if old := l.index; old != nil {
		old.file.Close()
	}
	l.index = idx
	l.mu.Unlock()
	return idx, nil
}

func sameFile(a, b fs.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// lock takes the layout's writer lock: an exclusive flock on oci-layout,
// which every layout has and no reader modifies.
func (l *Layout) lock() (unlock func(), err error) {
	f, err := os.Open(filepath.Join(l.dir, layoutFile))
	if err != nil {
		return nil, fmt.Errorf("oci:%s: locking: %w", l.dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("oci:%s: locking: %w", l.dir, err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// writeFileAtomic writes name in dir through a synced temporary file and a
// rename, so readers see the old or the new content, never a mix.
func writeFileAtomic(dir, name string, data []byte) error {
	tmp, err := writeTempFile(dir, "."+name+".tmp-*", data)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// plainDescriptor drops index-only annotations from a descriptor.
func plainDescriptor(d ocispec.Descriptor) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: d.MediaType, ArtifactType: d.ArtifactType, Digest: d.Digest, Size: d.Size}
}

func validTagForLayout(tag string) error {
	if tag == "" {
		return fmt.Errorf("empty tag: %w", errdef.ErrInvalidReference)
	}
	if _, err := digest.Parse(tag); err == nil {
		return fmt.Errorf("tag %q looks like a digest: %w", tag, errdef.ErrInvalidReference)
	}
	return nil
}

// blobPath is the file of the blob with the (validated) digest d.
func (l *Layout) blobPath(d digest.Digest) string {
	return filepath.Join(l.dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// ResolveBlob implements BlobResolver.
func (l *Layout) ResolveBlob(ctx context.Context, d digest.Digest) (ocispec.Descriptor, error) {
	if err := d.Validate(); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%s: %w", d, errdef.ErrInvalidDigest)
	}
	st, err := os.Stat(l.blobPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return ocispec.Descriptor{}, fmt.Errorf("oci:%s: blob %s: %w", l.dir, d, errdef.ErrNotFound)
	} else if err != nil {
		return ocispec.Descriptor{}, err
	}
	return ocispec.Descriptor{MediaType: "application/octet-stream", Digest: d, Size: st.Size()}, nil
}

// Ping implements Pinger: the layout's index must be readable.
func (l *Layout) Ping(ctx context.Context) error {
	_, err := l.loadIndex()
	return err
}
