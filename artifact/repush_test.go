package artifact_test

import (
	"context"
	"io"
	"sync/atomic"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/narinfo"
)

// requests counts the reads and writes that reach a target.
type requests struct {
	backend.Target
	n atomic.Int64
}

func (r *requests) FetchReference(ctx context.Context, ref string) (ocispec.Descriptor, io.ReadCloser, error) {
	r.n.Add(1)
	return r.Target.FetchReference(ctx, ref)
}
func (r *requests) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	r.n.Add(1)
	return r.Target.Fetch(ctx, d)
}
func (r *requests) Exists(ctx context.Context, d ocispec.Descriptor) (bool, error) {
	r.n.Add(1)
	return r.Target.Exists(ctx, d)
}
func (r *requests) Resolve(ctx context.Context, ref string) (ocispec.Descriptor, error) {
	r.n.Add(1)
	return r.Target.Resolve(ctx, ref)
}
func (r *requests) Push(ctx context.Context, d ocispec.Descriptor, rd io.Reader) error {
	r.n.Add(1)
	return r.Target.Push(ctx, d, rd)
}
func (r *requests) PushReference(ctx context.Context, d ocispec.Descriptor, rd io.Reader, ref string) error {
	r.n.Add(1)
	return r.Target.PushReference(ctx, d, rd, ref)
}

// TestRepushUnchanged: pushing a closure its tag already names reads the
// closure index, the gc marker and its referrers index, and writes a push
// record, nothing else; with a signing key, or another closure
// under the tag, the push does its whole work.
func TestRepushUnchanged(t *testing.T) {
	c := closureCache(t)
	l := openLayout(t)
	first := push(t, l, openCache(t, c.URL(), nil), artifact.PushOptions{}, storePath("app"))

	r := &requests{Target: l}
	again := push(t, r, openCache(t, c.URL(), nil), artifact.PushOptions{}, storePath("app"))
	// The closure index read, the push record that refreshes the
	// closure's push time (SPEC.md 10.1), then at once the gc marker read
	// and the read of the closure's referrers index to prune records.
	if n := r.n.Load(); n > 4 {
		t.Errorf("re-push of an unchanged closure made %d requests, want at most 4", n)
	}
	if again.Closure.Digest != first.Closure.Digest || again.Reused != len(first.Paths) || again.Packed != 0 || len(again.Paths) != len(first.Paths) {
		t.Errorf("re-push result: closure %s, %d reused, %d packed; want %s, %d, 0", again.Closure.Digest, again.Reused, again.Packed, first.Closure.Digest, len(first.Paths))
	}

	// A signing key adds signatures: every path is looked at.
	r.n.Store(0)
	signed := push(t, r, openCache(t, c.URL(), nil), artifact.PushOptions{SignKeys: []narinfo.SecretKey{testKey("repush-1")}}, storePath("app"))
	if r.n.Load() <= int64(len(first.Paths)) || signed.Closure.Digest == first.Closure.Digest {
		t.Errorf("signed re-push: %d requests, closure %s (unsigned %s): the signatures were not added", r.n.Load(), signed.Closure.Digest, first.Closure.Digest)
	}

	// Another closure under the same tag is pushed as usual.
	other := push(t, l, openCache(t, c.URL(), nil), artifact.PushOptions{Tag: "app"}, storePath("lib"))
	if other.Closure.Digest == signed.Closure.Digest || len(other.Paths) == len(first.Paths) {
		t.Errorf("pushing another closure under the tag kept the old one")
	}
}
