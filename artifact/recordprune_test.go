package artifact_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/spec"
)

// TestPruneRecords: past RecordsPruneAt records, a closure's referrers
// index keeps the newest RecordsKept and every other referrer; below it,
// nothing changes.
func TestPruneRecords(t *testing.T) {
	c := closureCache(t)
	l := openLayout(t)
	res := push(t, l, openCache(t, c.URL(), nil), artifact.PushOptions{Tag: "app"}, storePath("app"))
	// Another tool's referrer of the closure (a signature, say).
	other, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: "application/vnd.example.signature", Config: spec.EmptyConfig, Layers: []ocispec.Descriptor{},
		Subject: &res.Closure,
	})
	if err != nil {
		t.Fatal(err)
	}
	otherDesc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, other)
	if err := l.Push(t.Context(), otherDesc, bytes.NewReader(other)); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(time.Hour).UTC() // after the push's own record
	for i := range artifact.RecordsPruneAt + 4 {
		if _, err := artifact.StorePushRecord(t.Context(), l, res.Closure, "app", artifact.RecordOptions{At: t0.Add(time.Duration(i) * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if i == artifact.RecordsPruneAt-2 { // 1 + RecordsPruneAt-1 records: none dropped
			if n, err := artifact.PruneRecords(t.Context(), l, res.Closure); err != nil || n != 0 {
				t.Fatalf("prune at %d records: %d dropped, %v; want none", i+2, n, err)
			}
		}
	}
	n, err := artifact.PruneRecords(t.Context(), l, res.Closure)
	total := 1 + artifact.RecordsPruneAt + 4
	if err != nil || n != total-artifact.RecordsKept {
		t.Fatalf("prune at %d records: %d dropped, %v; want %d", total, n, err, total-artifact.RecordsKept)
	}
	recs, err := artifact.PushRecords(t.Context(), l, res.Closure)
	if err != nil || len(recs) != artifact.RecordsKept {
		t.Fatalf("after pruning: %d records, %v; want %d", len(recs), err, artifact.RecordsKept)
	}
	if newest := t0.Add(time.Duration(artifact.RecordsPruneAt+3) * time.Hour); !recs[0].Pushed.Equal(newest) {
		t.Errorf("newest record kept: %v, want %v", recs[0].Pushed, newest)
	}
	found := false
	if err := l.Referrers(t.Context(), res.Closure, "", func(refs []ocispec.Descriptor) error {
		for _, r := range refs {
			found = found || r.Digest == otherDesc.Digest
		}
		return nil
	}); err != nil || !found {
		t.Errorf("the other tool's referrer is gone (%v)", err)
	}
	if n, err := artifact.PruneRecords(t.Context(), l, res.Closure); err != nil || n != 0 {
		t.Errorf("a second prune dropped %d, %v; want none", n, err)
	}
}
