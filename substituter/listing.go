package substituter

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/codec"
	"github.com/nixoci/nixoci/nar"
	"github.com/nixoci/nixoci/spec"
)

// listingCacheBytes bounds the listings made from NARs kept in memory.
const listingCacheBytes = 64 << 20

// serveListing answers `GET /<hash>.ls`: the listing uploaded with the
// path (write-nar-listing=true) if there is one, else one made from the
// path's NAR, once: kept in memory (at most 64 MiB of listings) and, when
// uploads go to the backend holding the path, stored there as a listing
// artifact.
func (s *Server) serveListing(w http.ResponseWriter, r *http.Request, hash string) {
	if !spec.IsHashPart(hash) {
		http.Error(w, "malformed listing name: want <32 nix-base32 chars>.ls", http.StatusBadRequest)
		return
	}
	e, err := s.findFile(r.Context(), spec.ListingTag(hash), spec.ArtifactTypeListing)
	if err != nil {
		s.fail(w, r, "listing "+hash, err)
		return
	}
	if e != nil {
		if f, ok := e.fa.File(spec.MediaTypeListing); ok {
			s.sendFile(w, r, e, f, "application/json")
			return
		}
	}
	data, err := s.generatedListing(r.Context(), hash)
	switch {
	case errors.Is(err, nar.ErrListingTooLarge):
		http.Error(w, "the listing of "+hash+" would be larger than "+fmt.Sprint(nar.MaxListingSize)+" bytes", http.StatusNotFound)
	case err != nil:
		s.fail(w, r, "listing "+hash, err)
	case data == nil:
		http.Error(w, "no such path", http.StatusNotFound)
	default:
		s.sendBytes(w, r, data, "application/json")
	}
}

// generatedListing makes the listing of the path with hash part hash
// from its NAR (nil if no backend has the path), once for concurrent
// requests, and keeps it.
func (s *Server) generatedListing(ctx context.Context, hash string) ([]byte, error) {
	if data, ok := s.listings.get(hash); ok {
		return data, nil
	}
	v, err, _ := s.flight.Do("ls/"+hash, func() (any, error) {
		if data, ok := s.listings.get(hash); ok {
			return data, nil
		}
		ctx := context.WithoutCancel(ctx)
		pe, err := s.lookup(ctx, hash)
		if err != nil || pe == nil {
			return []byte(nil), err
		}
		data, err := s.listNAR(ctx, pe)
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", pe.Artifact.Info.StorePath, err)
		}
		s.listings.put(hash, data)
		if i, ok := pe.backendIndex(); s.upload != nil && ok && i == 0 {
			fa := &artifact.FileArtifact{Type: spec.ArtifactTypeListing,
				Annotations: map[string]string{spec.AnnotationStorePath: pe.Artifact.Info.StorePath, spec.AnnotationGenerated: "true"},
				Files:       []artifact.File{artifact.BytesFile(hash+".ls", spec.MediaTypeListing, data)}}
			if _, err := s.upload.storeFile(ctx, fa, spec.ListingTag(hash)); err != nil {
				s.log.Warn("cannot store a listing made from a NAR; it is kept in memory", "path", pe.Artifact.Info.StorePath, "err", err)
			}
		}
		return data, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}

// listNAR reads pe's NAR, checked against its digest, and lists it.
func (s *Server) listNAR(ctx context.Context, pe *pathEntry) ([]byte, error) {
	comp, err := spec.ParseCompression(pe.Artifact.Info.Compression)
	if err != nil {
		return nil, err
	}
	vr, err := s.openNAR(ctx, pe)
	if err != nil {
		return nil, err
	}
	defer vr.Close()
	dec, err := codec.NewReader(vr, comp)
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	var buf bytes.Buffer
	n, err := nar.WriteListing(&buf, dec)
	if err != nil {
		return nil, err
	}
	if uint64(n) != pe.Artifact.Info.NarSize {
		return nil, fmt.Errorf("NAR of %d bytes, the narinfo says %d: %w", n, pe.Artifact.Info.NarSize, artifact.ErrHashMismatch)
	}
	return buf.Bytes(), nil
}

// putListing stores `PUT /<hash>.ls` (write-nar-listing=true), checked
// to be a listing in Nix's format.
func (u *uploader) putListing(r *http.Request, file string) (int, error) {
	hash := file[:len(file)-len(".ls")]
	if !spec.IsHashPart(hash) {
		return http.StatusBadRequest, fmt.Errorf("malformed listing name %q: want <32 nix-base32 chars>.ls", file)
	}
	data, status, err := readUploadBody(r, nar.MaxListingSize)
	if err != nil {
		return status, err
	}
	fa, err := artifact.NewListingArtifact(hash, data)
	if err != nil {
		return http.StatusBadRequest, err
	}
	u.s.listings.remove(hash)
	return u.storeFile(r.Context(), fa, spec.ListingTag(hash))
}

// listingCache keeps listings made from NARs, least recently used out
// first, at most listingCacheBytes in all.
type listingCache struct {
	mu    sync.Mutex
	order *list.List // of *listingItem, most recent first
	items map[string]*list.Element
	bytes int
}

type listingItem struct {
	hash string
	data []byte
}

func newListingCache() *listingCache {
	return &listingCache{order: list.New(), items: map[string]*list.Element{}}
}

func (c *listingCache) get(hash string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[hash]; ok {
		c.order.MoveToFront(el)
		return el.Value.(*listingItem).data, true
	}
	return nil, false
}

func (c *listingCache) put(hash string, data []byte) {
	if len(data) > listingCacheBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[hash]; ok {
		c.bytes -= len(el.Value.(*listingItem).data)
		c.order.Remove(el)
	}
	c.items[hash] = c.order.PushFront(&listingItem{hash, data})
	c.bytes += len(data)
	for c.bytes > listingCacheBytes {
		el := c.order.Back()
		it := el.Value.(*listingItem)
		c.order.Remove(el)
		delete(c.items, it.hash)
		c.bytes -= len(it.data)
	}
}

func (c *listingCache) remove(hash string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[hash]; ok {
		c.bytes -= len(el.Value.(*listingItem).data)
		c.order.Remove(el)
		delete(c.items, hash)
	}
}
