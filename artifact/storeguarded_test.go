package artifact_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// TestStoreClosureGuarded: a closure written of paths a collection took
// meanwhile (their tags gone; in one case the NAR blob too) stores them
// again from their NAR blobs when the gc marker says a collection ran,
// fails naming ErrVanished when a NAR is gone too, and looks at nothing
// when no collection ran.
func TestStoreClosureGuarded(t *testing.T) {
	ctx := context.Background()
	c := closureCache(t)
	for _, tc := range []struct {
		name           string
		marker, delNAR bool
		wantTag        bool
		wantErr        error
	}{
		{"no collection", false, false, false, nil},
		{"collection ran", true, false, true, nil},
		{"NAR gone too", true, true, false, artifact.ErrVanished},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := openLayout(t)
			first := push(t, l, openCache(t, c.URL(), nil), artifact.PushOptions{Tag: "app"}, storePath("app"))
			var lib artifact.PathArtifact
			for _, p := range first.Paths {
				if p.Info.StorePath == storePath("lib") {
					lib = p
				}
			}
			began := time.Now()
			libTag := spec.PathTag(lib.Info.StorePath)
			if err := l.Update(ctx, func(tx *backend.LayoutTx) error {
				tx.Untag(libTag, lib.Manifest.Digest)
				if tc.delNAR {
					_, _, err := tx.DeleteBlob(lib.NAR.Digest, time.Now().Add(time.Hour))
					return err
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if tc.marker {
				m, err := artifact.NewGCMarker(began, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				if err := l.PushReference(ctx, m.Descriptor, bytes.NewReader(m.Data), spec.GCMarkerTag); err != nil {
					t.Fatal(err)
				}
			}
			_, err := artifact.StoreClosureGuarded(ctx, l, began, artifact.GuardedClosure{
				Roots: []string{storePath("app")}, Paths: first.Paths, Tag: "record",
			})
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("StoreClosureGuarded: %v, want %v", err, tc.wantErr)
			}
			if _, err := l.Resolve(ctx, libTag); (err == nil) != tc.wantTag {
				t.Errorf("lib's tag after the write: %v, want it there: %v", err, tc.wantTag)
			}
		})
	}
}
