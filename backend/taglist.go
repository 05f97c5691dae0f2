package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"oras.land/oras-go/v2/registry/remote/errcode"
)

// Tag listing at scale (SPEC.md section 5.3). A pull-through cache
// leaves 100,000 and more path tags in one repository, and serve lists
// them every --catalog-interval. oras-go reads each page of a tag list
// whole and refuses one over 4 MiB, which docker-registry 2.8 (it
// ignores "n" and "last" and answers every tag at once) reaches at
// about 120,000 path tags: the listing, and with it the catalog and gc,
// would fail. So tags are decoded as a stream and handed on in batches.
const (
	// TagPageSize is the page size asked for ("n"): large, since
	// distribution v3 reads every tag of the repository for each page
	// it answers, so small pages cost the registry quadratic work.
	// Registries may answer fewer (or, like distribution 2.8, all).
	TagPageSize = 10_000
	// tagBatch is how many tags one call of a listing's callback gets
	// at most: the memory a listing holds, whatever the page size.
	tagBatch = 1_000
	// maxTagPageBytes bounds one page's body: a registry answering
	// more (1.8 million path tags in one page) is refused, not read on.
	maxTagPageBytes = 64 << 20
	// MaxListedTags bounds the tags of one listing, over all its pages,
	// so a registry paging forever cannot keep a listing going.
	MaxListedTags = 10_000_000
	// maxTagLength is the distribution spec's bound on a tag (128
	// characters); a longer one is refused.
	maxTagLength = 128
)

// errTagList: the registry's tag list is malformed or beyond the bounds.
var errTagList = errors.New("malformed or oversized tag list")

// listTags lists r's tags after last, page by page (following the Link
// header, same origin only), calling fn with batches of at most tagBatch
// tags in the registry's order.
func (r *remoteTarget) listTags(ctx context.Context, last string, fn func([]string) error) error {
	u, err := url.Parse(r.tagsURL())
	if err != nil {
		return err
	}
	q := url.Values{"n": {strconv.Itoa(TagPageSize)}}
	if last != "" {
		q.Set("last", last)
	}
	u.RawQuery = q.Encode()
	listed := 0
	for next := u; next != nil; {
		if next, err = r.tagPage(ctx, next, &listed, fn); err != nil {
			return err
		}
	}
	return nil
}

// tagPage reads one page of tags at u and returns the next page's URL,
// nil if this was the last.
func (r *remoteTarget) tagPage(ctx context.Context, u *url.URL, listed *int, fn func([]string) error) (*url.URL, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := r.Repository.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, registryError(resp)
	}
	body := &io.LimitedReader{R: resp.Body, N: maxTagPageBytes + 1}
	if err := decodeTags(body, listed, fn); err != nil {
		return nil, fmt.Errorf("GET %s: %w", u.Redacted(), err)
	}
	return nextPage(resp)
}

// decodeTags streams the tags of a page ({"name": …, "tags": […]}) to
// fn in batches.
func decodeTags(body *io.LimitedReader, listed *int, fn func([]string) error) error {
	dec := json.NewDecoder(body)
	fail := func(what string) error {
		if body.N <= 0 {
			return fmt.Errorf("%w: a page over %d bytes", errTagList, maxTagPageBytes)
		}
		return fmt.Errorf("%w: %s at byte %d", errTagList, what, dec.InputOffset())
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return fail("not a JSON object")
	}
	batch := make([]string, 0, tagBatch)
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return fail("unreadable key")
		}
		if key != "tags" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return fail("unreadable value")
			}
			continue
		}
		tok, err := dec.Token()
		if err != nil {
			return fail("unreadable tags")
		}
		if tok == nil { // "tags": null, as distribution answers for none
			continue
		}
		if tok != json.Delim('[') {
			return fail("tags not an array")
		}
		for dec.More() {
			tok, err := dec.Token()
			tag, ok := tok.(string)
			switch {
			case err != nil || !ok:
				return fail("a tag not a string")
			case tag == "" || len(tag) > maxTagLength || strings.ContainsAny(tag, "/?#"):
				return fail(fmt.Sprintf("invalid tag %.140q", tag))
			case *listed >= MaxListedTags:
				return fmt.Errorf("%w: over %d tags", errTagList, MaxListedTags)
			}
			*listed++
			if batch = append(batch, tag); len(batch) == tagBatch {
				if err := fn(batch); err != nil {
					return err
				}
				batch = batch[:0]
			}
		}
		if _, err := dec.Token(); err != nil {
			return fail("unterminated tags")
		}
	}
	if _, err := dec.Token(); err != nil {
		return fail("unterminated object")
	}
	if len(batch) > 0 {
		return fn(batch)
	}
	return nil
}

// nextPage is the URL the Link header names for the next page (RFC 8288,
// as the distribution spec uses it), nil if none. A link to another
// origin is refused: the registry must not send the client elsewhere.
func nextPage(resp *http.Response) (*url.URL, error) {
	link := resp.Header.Get("Link")
	if link == "" {
		return nil, nil
	}
	start, end := strings.IndexByte(link, '<'), strings.IndexByte(link, '>')
	if start != 0 || end < 0 {
		return nil, fmt.Errorf("%w: Link header %.200q", errTagList, link)
	}
	next, err := resp.Request.URL.Parse(link[1:end])
	if err != nil {
		return nil, fmt.Errorf("%w: Link header %.200q: %v", errTagList, link, err)
	}
	if next.Scheme != resp.Request.URL.Scheme || next.Host != resp.Request.URL.Host {
		return nil, fmt.Errorf("%w: Link header %.200q leaves %s", errTagList, link, resp.Request.URL.Host)
	}
	return next, nil
}

// registryError is the registry's error answer as oras-go gives it
// (errcode.ErrorResponse), so classify reads it as it reads oras-go's.
func registryError(resp *http.Response) error {
	e := &errcode.ErrorResponse{Method: resp.Request.Method, URL: resp.Request.URL, StatusCode: resp.StatusCode}
	var body struct {
		Errors errcode.Errors `json:"errors"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body) == nil {
		e.Errors = body.Errors
	}
	return e
}
