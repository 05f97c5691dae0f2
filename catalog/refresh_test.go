package catalog_test

import (
	"errors"
	"fmt"
	"net/http"
	"path"
	"sort"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/catalog"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/spec"
)

// TestRefreshReadsOnlyWhatChanged counts the requests refreshes make to
// a real registry through a counting proxy: a refresh with nothing
// changed lists the tags and resolves each tag that may name a closure
// (one HEAD), and reads no closure; a tag moved to a new closure costs
// that closure only; and closures that did not fit a full catalog (at
// reading, or at adding) are not read again while it stays full.
func TestRefreshReadsOnlyWhatChanged(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	proxy := testenv.StartFaultProxy(t, reg.Addr, testenv.FaultOptions{})
	r, err := backend.ParseRef(proxy.Ref("cache"))
	if err != nil {
		t.Fatal(err)
	}
	tgt, err := backend.Open(t.Context(), r, backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fixture.Synthetic(t, tgt, "one", spec.ClosureVersion, "1", "rf-a", "rf-b", "rf-c")
	fixture.Synthetic(t, tgt, "two", spec.ClosureVersion, "2", "rf-d", "rf-e")

	for _, tc := range []struct {
		name     string
		maxPaths int
		err      bool // the catalog stays incomplete
	}{
		{"room for both", 0, false},
		{"room for neither", 1, true},     // each over the reader's bound
		{"room for one of them", 4, true}, // both read, one left out when added
	} {
		t.Run(tc.name, func(t *testing.T) {
			var reports []catalog.Report
			c := catalog.New(tgt, "cache", catalog.Options{MaxPaths: tc.maxPaths, OnRefresh: func(r catalog.Report) { reports = append(reports, r) }})
			refresh := func() []testenv.ProxyRequest {
				t.Helper()
				n := len(proxy.Log())
				if err := c.Refresh(t.Context()); (err != nil) != tc.err {
					t.Fatalf("refresh: %v, want an error: %v", err, tc.err)
				}
				return proxy.Log()[n:]
			}
			if first := reads(refresh()); len(first) < 2 {
				t.Fatalf("first refresh read %v; want both closures", first)
			}
			second := refresh()
			if got := reads(second); len(got) != 0 {
				t.Errorf("a refresh with nothing changed read %v; want nothing", got)
			}
			if got, want := resolved(second), []string{"one", "two"}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("a refresh with nothing changed resolved %v; want %v", got, want)
			}
			if r := reports[len(reports)-1]; r.Read != 0 || r.Named != 2 || r.Tags != 9 {
				t.Errorf("report of a refresh with nothing changed: %+v; want 9 tags (5 path tags, 2 referrers tags), 2 resolved, 0 read", r)
			}
			if _, err := c.Lookup(spec.PathTag(fixture.StorePath("rf-e"))); tc.err != errors.Is(err, catalog.ErrIncomplete) {
				t.Errorf("Lookup after the second refresh: %v; incomplete: %v", err, tc.err)
			}
		})
	}

	// A tag moved to another closure: that closure is read, no other.
	c := catalog.New(tgt, "cache", catalog.Options{})
	if err := c.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	moved, _ := fixture.Synthetic(t, tgt, "two", spec.ClosureVersion, "3", "rf-f", "rf-e")
	n := len(proxy.Log())
	if err := c.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := reads(proxy.Log()[n:]); len(got) == 0 || got[0] != moved.Digest.String() || strings.Contains(fmt.Sprint(got[1:]), "manifests/") {
		t.Errorf("after a tag moved, the refresh read %v; want the new closure %s (and its parts) only", got, moved.Digest)
	}
	if _, err := c.Lookup(spec.PathTag(fixture.StorePath("rf-f"))); err != nil {
		t.Errorf("a path of the moved tag's closure: %v", err)
	}
}

// reads are the GETs of requests: what was read (manifests by digest
// first, then blobs), by reference.
func reads(reqs []testenv.ProxyRequest) []string {
	var manifests, blobs []string
	for _, r := range reqs {
		switch {
		case r.Method != http.MethodGet:
		case strings.Contains(r.Path, "/manifests/"):
			manifests = append(manifests, path.Base(r.Path))
		case strings.Contains(r.Path, "/blobs/"):
			blobs = append(blobs, "blobs/"+path.Base(r.Path))
		}
	}
	return append(manifests, blobs...)
}

// resolved are the tags of requests' HEADs of manifests, sorted.
func resolved(reqs []testenv.ProxyRequest) []string {
	var tags []string
	for _, r := range reqs {
		if r.Method == http.MethodHead && strings.Contains(r.Path, "/manifests/") {
			tags = append(tags, path.Base(r.Path))
		}
	}
	sort.Strings(tags)
	return tags
}
