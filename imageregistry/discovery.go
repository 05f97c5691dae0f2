package imageregistry

// This file: content discovery: tags/list and the referrers API.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/internal/serving"
)

// latestTag is the one tag of every repository (SPEC.md section 9).
const latestTag = "latest"

// maxReferrers bounds the referrers listed for one digest.
const maxReferrers = 1000

// serveTags answers tags/list: the name's one tag, latest, if its
// closures exist, paginated by n and last as the distribution spec says.
func (g *Registry) serveTags(w http.ResponseWriter, r *http.Request, name string) {
	if _, _, err := g.closureBackend(r.Context(), g.composeSpec(name).closures); err != nil {
		if serving.IsNotFound(err) {
			registryError(w, http.StatusNotFound, codeNameUnknown, err.Error())
			return
		}
		g.fail(w, "tags of "+name, err)
		return
	}
	tags, more, err := paginate([]string{latestTag}, r.URL.Query())
	if err != nil {
		registryError(w, http.StatusBadRequest, codeUnsupported, err.Error())
		return
	}
	if more {
		q := url.Values{"n": {strconv.Itoa(len(tags))}, "last": {tags[len(tags)-1]}}
		w.Header().Set("Link", fmt.Sprintf(`</v2/%s/tags/list?%s>; rel="next"`, name, q.Encode()))
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"name": name, "tags": tags})
}

// paginate applies the query parameters n (at most that many; n=0 none)
// and last (only tags sorted after it) to sorted tags, and reports
// whether tags are left after the page.
func paginate(tags []string, q url.Values) (page []string, more bool, err error) {
	if last := q.Get("last"); last != "" {
		i, _ := slices.BinarySearch(tags, last)
		if i < len(tags) && tags[i] == last {
			i++
		}
		tags = tags[i:]
	}
	page = tags
	if s := q.Get("n"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return nil, false, fmt.Errorf("n=%q: want a number of tags, 0 or more", s)
		}
		if n < len(tags) {
			page, more = tags[:n], n > 0
		}
	}
	if page == nil {
		page = []string{}
	}
	return page, more, nil
}

// serveReferrers answers the referrers API: an image index of the
// manifests whose subject is the digest, as the backend the name's image
// is composed in lists them (a composed image has none unless someone
// attached some there, e.g. a signature); an empty index for digests the
// image does not reach. artifactType filters, as the header
// OCI-Filters-Applied says.
func (g *Registry) serveReferrers(w http.ResponseWriter, r *http.Request, name, ref string) {
	d, err := digest.Parse(ref)
	if err != nil {
		registryError(w, http.StatusBadRequest, codeDigestInvalid, "invalid digest "+strconv.Quote(ref))
		return
	}
	c, desc, found, ok := g.imageReaching(w, r.Context(), name, d)
	if !ok {
		return
	}
	artifactType := r.URL.Query().Get("artifactType")
	refs := []ocispec.Descriptor{}
	if found {
		if refs, err = g.referrers(r.Context(), c, desc, artifactType); err != nil {
			g.fail(w, "referrers of "+ref, err)
			return
		}
	}
	data, _ := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: refs,
	})
	h := w.Header()
	h.Set("Content-Type", ocispec.MediaTypeImageIndex)
	h.Set("Content-Length", strconv.Itoa(len(data)))
	if artifactType != "" {
		h.Set("OCI-Filters-Applied", "artifactType")
	}
	if r.Method == http.MethodGet {
		w.Write(data)
	}
}

// referrers lists the referrers of desc in the backend c was composed in.
func (g *Registry) referrers(ctx context.Context, c *composed, desc ocispec.Descriptor, artifactType string) ([]ocispec.Descriptor, error) {
	ctx, cancel := context.WithTimeout(ctx, g.backends.Timeout())
	defer cancel()
	b := g.backends.List()[c.backend]
	refs := []ocispec.Descriptor{}
	err := b.Target.Referrers(ctx, desc, artifactType, func(page []ocispec.Descriptor) error {
		for _, d := range page {
			if len(refs) == maxReferrers {
				return nil
			}
			refs = append(refs, d)
		}
		return nil
	})
	if serving.IsNotFound(err) {
		return refs, nil
	}
	return refs, err
}
