package backend

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"
)

// LayoutTx is one change to a layout made under its writer lock (see
// Layout.Update): Entries is index.json as it is now, and no other
// writer tags until the change ends. Tag and referrer removals are
// written in one rewrite of index.json at the end; blob deletions happen
// at once.
type LayoutTx struct {
	ctx      context.Context
	l        *Layout
	idx      *layoutIndex
	untag    map[string]digest.Digest
	dropRefs map[digest.Digest]map[digest.Digest]bool // subject -> referrers to drop
}

// Update runs change under the layout's writer lock and then writes what
// it removed. An error from change writes nothing.
func (l *Layout) Update(ctx context.Context, change func(tx *LayoutTx) error) error {
	unlock, err := l.lock()
	if err != nil {
		return err
	}
	defer unlock()
	idx, err := l.readIndex()
	if err != nil {
		return err
	}
	tx := &LayoutTx{ctx: ctx, l: l, idx: idx, untag: map[string]digest.Digest{}, dropRefs: map[digest.Digest]map[digest.Digest]bool{}}
	if err := change(tx); err != nil {
		return err
	}
	return tx.commit()
}

// Entries lists index.json's entries as they are, tags in the
// org.opencontainers.image.ref.name annotation. The caller must not
// modify them.
func (tx *LayoutTx) Entries() []ocispec.Descriptor { return tx.idx.all }

// Untag removes tag when the change ends, if it names d; it reports
// whether it does.
func (tx *LayoutTx) Untag(tag string, d digest.Digest) bool {
	cur, ok := tx.idx.tags[tag]
	if !ok || cur.Digest != d {
		return false
	}
	tx.untag[tag] = d
	return true
}

// DropReferrer removes referrer from the referrers index of subject (the
// tag ReferrersTag(subject)) when the change ends; an index left empty
// loses its tag.
func (tx *LayoutTx) DropReferrer(subject, referrer digest.Digest) {
	m := tx.dropRefs[subject]
	if m == nil {
		m = map[digest.Digest]bool{}
		tx.dropRefs[subject] = m
	}
	m[referrer] = true
}

// Tag reports what tag names now.
func (tx *LayoutTx) Tag(tag string) (ocispec.Descriptor, bool) {
	d, ok := tx.idx.tags[tag]
	return d, ok
}

// DeleteBlob removes the blob file of d now, unless it was modified at
// or after notAfter (a writer may have stored it a moment ago), and
// returns its size and whether it went; a blob already gone is
// ErrNotFound.
func (tx *LayoutTx) DeleteBlob(d digest.Digest, notAfter time.Time) (int64, bool, error) {
	if err := d.Validate(); err != nil {
		return 0, false, fmt.Errorf("%s: %w", d, errdef.ErrInvalidDigest)
	}
	p := tx.l.blobPath(d)
	st, err := os.Stat(p)
	if err == nil && !st.ModTime().Before(notAfter) {
		return st.Size(), false, nil
	}
	if err == nil {
		err = os.Remove(p)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, fmt.Errorf("oci:%s: blob %s: %w", tx.l.dir, d, errdef.ErrNotFound)
	}
	if err != nil {
		return 0, false, fmt.Errorf("oci:%s: deleting blob %s: %w", tx.l.dir, d, err)
	}
	return st.Size(), true, nil
}

// commit writes the referrers indexes that changed, then index.json.
func (tx *LayoutTx) commit() error {
	if len(tx.untag) == 0 && len(tx.dropRefs) == 0 {
		return nil
	}
	set := map[string]ocispec.Descriptor{}
	for subject, drop := range tx.dropRefs {
		tag := ReferrersTag(subject)
		if _, gone := tx.untag[tag]; gone {
			continue
		}
		cur, ok := tx.idx.tags[tag]
		if !ok {
			continue
		}
		list, err := tx.l.referrersIndex(tx.ctx, tag)
		if err != nil {
			return err
		}
		kept := slices.DeleteFunc(slices.Clone(list), func(d ocispec.Descriptor) bool { return drop[d.Digest] })
		if len(kept) == len(list) {
			continue
		}
		if len(kept) == 0 {
			tx.untag[tag] = cur.Digest
			continue
		}
		data, err := json.Marshal(newIndex(kept))
		if err != nil {
			return err
		}
		desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(data), Size: int64(len(data))}
		if err := tx.l.storage.Push(tx.ctx, desc, bytes.NewReader(data)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
			return err
		}
		set[tag] = desc
	}
	return tx.l.updateIndex(func(byTag map[string]ocispec.Descriptor) error {
		for tag, d := range tx.untag {
			if byTag[tag].Digest == d {
				delete(byTag, tag)
			}
		}
		for tag, d := range set {
			d.Annotations = map[string]string{ocispec.AnnotationRefName: tag}
			byTag[tag] = d
		}
		return nil
	})
}

// BlobFile is one file under a layout's blobs/sha256.
type BlobFile struct {
	Digest  digest.Digest
	Size    int64
	ModTime time.Time
}

// Blobs calls fn for every sha256 blob file of the layout, reading the
// directory a page at a time; files whose names are not digests are
// skipped.
func (l *Layout) Blobs(ctx context.Context, fn func(BlobFile) error) error {
	dir := filepath.Join(l.dir, "blobs", digest.SHA256.String())
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("oci:%s: %w", l.dir, err)
	}
	defer f.Close()
	for {
		entries, err := f.ReadDir(1024)
		for _, e := range entries {
			d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
			if !e.Type().IsRegular() || d.Validate() != nil {
				continue
			}
			info, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted since listed
			} else if err != nil {
				return err
			}
			if err := fn(BlobFile{Digest: d, Size: info.Size(), ModTime: info.ModTime()}); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("oci:%s: %w", l.dir, err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// String names the layout as targets are written: "oci:DIR".
func (l *Layout) String() string { return LayoutPrefix + l.dir }
