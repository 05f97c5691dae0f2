package artifact

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/backend"
)

// On a registry without the referrers API, a closure's push records are
// listed by the index its referrers tag names (SPEC.md 5.3), which every
// push grows by one entry; a registry that refuses deletes also keeps
// every index replaced. PruneRecords bounds that index: past
// RecordsPruneAt push records it is written again with the newest
// RecordsKept (retention reads only the newest, SPEC.md 10.1), every
// other referrer as it was.
const (
	RecordsKept    = 8
	RecordsPruneAt = 16
)

// PruneRecords prunes the push records listed by the referrers tag index
// of closure in t, if there are more than RecordsPruneAt, and returns how
// many it dropped from it. Where the registry allows, it then deletes the
// index it replaced and the dropped records (a refusal stops that, and is
// not an error). A record another writer adds between the read and the
// write of the index can be lost from it: it was made at about the same
// time as the one this writer made, which the index keeps.
func PruneRecords(ctx context.Context, t backend.Target, closure ocispec.Descriptor) (int, error) {
	tag := backend.ReferrersTag(closure.Digest)
	old, data, err := backend.FetchManifest(ctx, t, tag)
	if errors.Is(err, errdef.ErrNotFound) {
		return 0, nil // the referrers API, or no record yet
	} else if err != nil {
		return 0, err
	}
	var index ocispec.Index
	if err := json.Unmarshal(data, &index); err != nil || old.MediaType != ocispec.MediaTypeImageIndex {
		return 0, nil // not a referrers index: not ours to rewrite
	}
	var records []PushRecord
	for _, d := range index.Manifests {
		if r, ok := ParsePushRecord(d); ok {
			records = append(records, r)
		}
	}
	if len(records) <= RecordsPruneAt {
		return 0, nil
	}
	slices.SortFunc(records, func(a, b PushRecord) int { return b.Pushed.Compare(a.Pushed) })
	drop := map[string]bool{}
	for _, r := range records[RecordsKept:] {
		drop[r.Descriptor.Digest.String()] = true
	}
	kept := index
	kept.Manifests = slices.DeleteFunc(slices.Clone(index.Manifests), func(d ocispec.Descriptor) bool { return drop[d.Digest.String()] })
	pruned, err := json.Marshal(kept)
	if err != nil {
		return 0, err
	}
	desc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageIndex, pruned)
	if err := t.PushReference(ctx, desc, bytes.NewReader(pruned), tag); err != nil {
		return 0, err
	}
	if d, ok := t.(backend.Deleter); ok {
		gone := append([]ocispec.Descriptor{old}, recordDescriptors(records[RecordsKept:])...)
		for _, m := range gone {
			if err := d.DeleteManifest(ctx, m, nil); err != nil && !errors.Is(err, errdef.ErrNotFound) {
				slog.Debug("pruned push records stay in the registry, untagged", "target", t, "closure", closure.Digest, "err", err)
				break
			}
		}
	}
	return len(drop), nil
}

func recordDescriptors(records []PushRecord) []ocispec.Descriptor {
	out := make([]ocispec.Descriptor, len(records))
	for i, r := range records {
		out[i] = r.Descriptor
	}
	return out
}

// storeRecordPruned is StorePushRecord for the closure tagged tag, then
// PruneRecords run beside after (the gc marker check that follows a
// record), whose result it returns.
func storeRecordPruned(ctx context.Context, dst backend.Target, closure ocispec.Descriptor, tag string, opts RecordOptions, after func() error) error {
	if _, err := StorePushRecord(ctx, dst, closure, tag, opts); err != nil {
		return fmt.Errorf("closure %s tagged, but %w", tag, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		pruneLogged(ctx, dst, closure, tag)
	}()
	err := after()
	<-done
	return err
}

// pruneLogged is PruneRecords for the closure tagged tag, whose failure
// is only logged: the push or copy is complete without.
func pruneLogged(ctx context.Context, dst backend.Target, closure ocispec.Descriptor, tag string) {
	if n, err := PruneRecords(ctx, dst, closure); err != nil {
		slog.Warn("cannot prune the push records of a closure; its referrers index keeps growing", "target", dst, "tag", tag, "err", err)
	} else if n > 0 {
		slog.Debug("pruned push records", "target", dst, "tag", tag, "dropped", n)
	}
}
