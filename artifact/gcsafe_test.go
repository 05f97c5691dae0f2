package artifact_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// TestPushRecords: a push records its time; pushing the same closure
// again adds a newer record; nixoci copy records the copy at the
// destination.
func TestPushRecords(t *testing.T) {
	c := closureCache(t)
	l := openLayout(t)
	first := push(t, l, openCache(t, c.URL(), nil), artifact.PushOptions{Tag: "app", Record: artifact.RecordOptions{Tool: "nixoci/test", Host: "builder-1"}}, storePath("app"))
	recs, err := artifact.PushRecords(t.Context(), l, first.Closure)
	if err != nil || len(recs) != 1 {
		t.Fatalf("records after one push: %+v, %v", recs, err)
	}
	if r := recs[0]; r.Tag != "app" || r.Tool != "nixoci/test" || r.Host != "builder-1" || time.Since(r.Pushed) > time.Minute {
		t.Errorf("record %+v", r)
	}
	push(t, l, openCache(t, c.URL(), nil), artifact.PushOptions{Tag: "app"}, storePath("app"))
	recs, err = artifact.PushRecords(t.Context(), l, first.Closure)
	if err != nil || len(recs) != 2 || !recs[0].Pushed.After(recs[1].Pushed) {
		t.Fatalf("records after a re-push: %+v, %v; want two, newest first", recs, err)
	}

	dst := openLayout(t)
	if _, err := artifact.Copy(t.Context(), l, "app", dst, "copied", artifact.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	recs, err = artifact.PushRecords(t.Context(), dst, first.Closure)
	if err != nil || len(recs) != 1 || recs[0].Tag != "copied" {
		t.Errorf("records at the copy's destination: %+v, %v", recs, err)
	}
}

// TestPushChecksAfterCollection: a push that reuses a path whose NAR blob
// is gone stores it again when the gc marker says a collection ran while
// it pushed, and does not look when no collection ran.
func TestPushChecksAfterCollection(t *testing.T) {
	ctx := context.Background()
	c := closureCache(t)
	for _, tc := range []struct {
		name     string
		marker   bool
		restores bool
	}{
		{"no-collection", false, false},
		{"collection-ran", true, true},
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
			// What a collection racing the push would leave: the path's
			// NAR gone, its tag still there (the push reuses it).
			if err := l.Update(ctx, func(tx *backend.LayoutTx) error {
				tx.Untag("app", first.Closure.Digest)
				_, _, err := tx.DeleteBlob(lib.NAR.Digest, time.Now().Add(time.Hour))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if tc.marker {
				m, err := artifact.NewGCMarker(time.Now().Add(-time.Minute), time.Now())
				if err != nil {
					t.Fatal(err)
				}
				if err := l.PushReference(ctx, m.Descriptor, bytes.NewReader(m.Data), spec.GCMarkerTag); err != nil {
					t.Fatal(err)
				}
			}
			again := push(t, l, openCache(t, c.URL(), nil), artifact.PushOptions{Tag: "app"}, storePath("app"))
			if again.Closure.Digest != first.Closure.Digest {
				t.Errorf("closure %s, want %s", again.Closure.Digest, first.Closure.Digest)
			}
			if ok, _ := l.Exists(ctx, lib.NAR); ok != tc.restores {
				t.Errorf("lib's NAR stored: %v, want %v", ok, tc.restores)
			}
		})
	}
}
