package serving

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/backend"
)

// BlobLocation is where a blob is: which backend, and its descriptor.
type BlobLocation struct {
	Backend int // index into Backends.List
	Desc    ocispec.Descriptor
}

// RememberBlob records where the blob desc is (a NAR named by a narinfo
// just served, say), so that the request for it that follows asks no
// backend.
func (b *Backends) RememberBlob(index int, desc ocispec.Descriptor) {
	b.blobs.Put(desc.Digest.String(), BlobLocation{index, desc}, b.opts.CacheTTL)
}

// LocateBlob finds the backend holding the blob with digest d: from the
// blobs located before, else by asking each backend.
func (b *Backends) LocateBlob(ctx context.Context, d digest.Digest) (BlobLocation, bool, error) {
	if loc, ok := b.blobs.Get(d.String()); ok {
		b.blobCache.Count(true)
		return loc, true, nil
	}
	b.blobCache.Count(false)
	ctx, cancel := context.WithTimeout(ctx, b.opts.Timeout)
	defer cancel()
	desc, i, found, err := Ask(ctx, b, b.resolveBlob, func(ctx context.Context, t backend.Target) (ocispec.Descriptor, error) {
		return t.ResolveBlob(ctx, d)
	})
	if !found {
		return BlobLocation{}, false, err
	}
	b.RememberBlob(i, desc)
	return BlobLocation{i, desc}, true, nil
}

// OpenBlob opens the blob at loc, timed; a blob gone from where it was
// found is forgotten there, so the next request looks for it again.
func (b *Backends) OpenBlob(ctx context.Context, loc BlobLocation) (io.ReadCloser, error) {
	start := time.Now()
	rc, err := b.list[loc.Backend].Target.Fetch(ctx, loc.Desc)
	b.fetchBlob.Observe(start, err)
	if err == nil {
		b.latency[loc.Backend].Observe(time.Since(start))
	}
	if IsNotFound(err) {
		b.blobs.Remove(loc.Desc.Digest.String())
	}
	return rc, err
}

// ServeBlob streams the blob at loc, opened as rc (whose first bytes,
// head, were already read from it), with Range support, verifying it
// against its digest. It returns an error wrapping ErrCorrupt if the
// content did not match and the response was cut short.
//
// A blob file of an image layout that was verified whole before and has
// not changed since (same fileID) is served straight from the file, which
// lets the kernel send it (sendfile) without copying it through the
// server.
func (b *Backends) ServeBlob(w http.ResponseWriter, r *http.Request, loc BlobLocation, rc io.Reader, head []byte) error {
	key := loc.Desc.Digest.String()
	f, id, isFile := fileIdentity(rc)
	isFile = isFile && id.size == loc.Desc.Size // else: not the blob recorded
	if isFile {
		if known, ok := b.verified.Get(key); ok && known == id {
			b.opts.Metrics.sendfile.Inc()
			http.ServeContent(w, r, "", time.Time{}, f)
			return nil
		}
	}
	br := newBlobReader(rc, head, loc.Desc)
	if br.seeker == nil {
		r.Header.Del("Range") // cannot seek: always the whole blob
	}
	http.ServeContent(w, r, "", time.Time{}, br)
	if br.corrupt != nil {
		b.opts.Metrics.corrupt.Inc()
		return br.corrupt
	}
	if br.verified && isFile {
		if _, after, ok := fileIdentity(rc); ok && after == id {
			b.verified.Put(key, id, verifiedTTL)
		}
	}
	return nil
}

// CountCorrupt counts a blob refused as corrupt before it was served.
func (b *Backends) CountCorrupt() { b.opts.Metrics.corrupt.Inc() }
