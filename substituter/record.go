package substituter

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// record is one record of stored paths (SPEC.md section 14.5) as read
// back from its tag, and as it is written again: a version 2 closure whose
// roots are the paths recorded as stored, listing with them what of their
// references the first backend holds.
type record struct {
	tag string
	// old is the version read back (zero if none), replaced when the
	// record is stored again; oldSubject its subject.
	old, oldSubject ocispec.Descriptor
	roots           map[string]bool                  // store paths
	members         map[string]artifact.PathArtifact // hash part -> artifact
	maxRoots        int
}

// readRecord reads the record tag names in the first backend; a tag that
// names nothing is an empty record.
func readRecord(ctx context.Context, s *Server, tag string, maxRoots int) (*record, error) {
	dst := s.backends.List()[0].Target
	rec := &record{tag: tag, roots: map[string]bool{}, members: map[string]artifact.PathArtifact{}, maxRoots: maxRoots}
	c, err := artifact.ReadClosure(ctx, dst, tag)
	if isNotFound(err) {
		return rec, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the record %s: %w", tag, err)
	}
	if c.Version != spec.ClosureV2 {
		return nil, fmt.Errorf("the record tag %s names a version %s closure, not one serve writes", tag, c.Version)
	}
	paths, err := artifact.ClosurePaths(ctx, dst, c, 8)
	if err != nil {
		return nil, fmt.Errorf("reading the record %s: %w", tag, err)
	}
	for _, p := range paths {
		rec.members[spec.PathTag(p.Info.StorePath)] = p
	}
	for _, root := range c.Roots {
		rec.roots[root] = true
	}
	rec.old = c.Descriptor
	if len(c.Roots) > 0 {
		first := slices.Min(c.Roots)
		if m, ok := rec.members[spec.PathTag(first)]; ok {
			rec.oldSubject = ocispec.Descriptor{MediaType: m.Manifest.MediaType, Digest: m.Manifest.Digest, Size: m.Manifest.Size}
		}
	}
	return rec, nil
}

// add makes the record list a prefix of arts (sorted) as stored, as many
// as its room for roots allows, with what of their references the first
// backend holds, and returns how many it took.
//
// fresh asks the backend for each reference, not what the server found
// lately (after a failed write: a collection may have deleted some).
func (rec *record) add(ctx context.Context, s *Server, arts []artifact.PathArtifact, fresh bool) (int, error) {
	took := 0
	for _, a := range arts {
		if !rec.roots[a.Info.StorePath] && len(rec.roots) >= rec.maxRoots {
			break
		}
		rec.roots[a.Info.StorePath] = true
		rec.members[spec.PathTag(a.Info.StorePath)] = a
		took++
	}
	// The references, as far as the backend holds them: so the record is
	// a closure (a binary cache once pulled) wherever it can be, and a
	// collection keeps with the paths stored what Nix did not upload
	// because the cache had it.
	var queue []string
	for _, a := range arts[:took] {
		queue = append(queue, a.Info.References...)
	}
	checked := map[string]bool{}
	for len(queue) > 0 {
		h := spec.PathTag(queue[len(queue)-1])
		queue = queue[:len(queue)-1]
		if _, ok := rec.members[h]; ok || checked[h] {
			continue
		}
		checked[h] = true
		art, ok, err := storedPath(ctx, s, h, fresh)
		if err != nil {
			return 0, fmt.Errorf("record %s: reference %s: %w", rec.tag, h, err)
		}
		if ok {
			rec.members[h] = art
			queue = append(queue, art.Info.References...)
		}
	}
	return took, nil
}

// storedPath finds the path with hash part hash in the first backend:
// from what the server found there lately, else by its tag.
func storedPath(ctx context.Context, s *Server, hash string, fresh bool) (artifact.PathArtifact, bool, error) {
	if e, ok := s.resolver.cached(hash); ok && e != nil && !fresh {
		if b, ok := e.NAR.(backendNAR); ok && b.Backend == 0 {
			return e.Artifact, true, nil
		}
	}
	return intactPath(ctx, s, hash, fresh)
}

// intactPath finds the path with hash part hash in the first backend by
// its tag; checked, also its NAR blob (a collection in a layout deletes
// blobs: a path without one is not stored).
func intactPath(ctx context.Context, s *Server, hash string, checked bool) (artifact.PathArtifact, bool, error) {
	dst := s.backends.List()[0].Target
	art, err := artifact.FetchPathByHash(ctx, dst, hash)
	if isNotFound(err) {
		return artifact.PathArtifact{}, false, nil
	} else if err != nil {
		return artifact.PathArtifact{}, false, err
	}
	if checked {
		if ok, err := dst.Exists(ctx, art.NAR); err != nil || !ok {
			return artifact.PathArtifact{}, false, err
		}
	}
	return art, true, nil
}

// store writes the record (its closure, tagged last, then its push
// record, made as opts says), guarded against a collection running at
// the same time (SPEC.md 10.3, step 4) from began, when serve found
// the oldest of the paths stored.
func (rec *record) store(ctx context.Context, s *Server, began time.Time, opts artifact.RecordOptions) error {
	dst := s.backends.List()[0].Target
	roots := make([]string, 0, len(rec.roots))
	for r := range rec.roots {
		roots = append(roots, r)
	}
	slices.Sort(roots)
	paths := make([]artifact.PathArtifact, 0, len(rec.members))
	for _, p := range rec.members {
		paths = append(paths, p)
	}
	slices.SortFunc(paths, func(a, b artifact.PathArtifact) int { return strings.Compare(a.Info.StorePath, b.Info.StorePath) })
	desc, err := artifact.StoreClosureGuarded(ctx, dst, began, artifact.GuardedClosure{Roots: roots, Paths: paths, Tag: rec.tag, Record: opts})
	if err != nil {
		return fmt.Errorf("storing the record %s: %w", rec.tag, err)
	}
	if rec.old.Digest != "" && rec.old.Digest != desc.Digest {
		rec.deleteOld(ctx, s)
	}
	return nil
}

// deleteOld deletes the version of the record just replaced, with its
// push records, where the registry allows: nothing else names it (the tag
// is this instance's alone). On a registry with the referrers API a
// collection would not find it again (SPEC.md 10.3, limits); elsewhere
// it would, as a referrer of its first root. Its parts, which the new
// version may share, stay for the collection. Failures are only logged.
func (rec *record) deleteOld(ctx context.Context, s *Server) {
	dst := s.backends.List()[0].Target
	d, ok := dst.(backend.Deleter)
	if !ok {
		return // an image layout: its collection finds the version through the referrers tag
	}
	records, err := artifact.PushRecords(ctx, dst, rec.old)
	if err == nil {
		for _, r := range records {
			if err = d.DeleteManifest(ctx, r.Descriptor, &rec.old); err != nil && !isNotFound(err) {
				break
			}
		}
	}
	if err == nil || isNotFound(err) {
		var subject *ocispec.Descriptor
		if rec.oldSubject.Digest != "" {
			subject = &rec.oldSubject
		}
		if err = d.DeleteManifest(ctx, rec.old, subject); isNotFound(err) {
			err = nil
		}
	}
	if err != nil {
		s.log.Debug("the replaced version of a record stays for a collection to delete", "tag", rec.tag, "digest", rec.old.Digest, "err", err)
	}
}
