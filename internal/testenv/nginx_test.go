package testenv

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// TestNginxProxy: nginx passes registry requests on with the client's
// Host (upload Locations point at it), refuses bodies over its limit
// with 413 and, with RefusePatch, PATCH with 405; the access log has
// each request's length.
func TestNginxProxy(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	p := StartNginxProxy(t, reg.Addr, NginxOptions{MaxBodySize: "1m", RefusePatch: true})
	c := proxyTestClient()
	loc := startUpload(t, c, p.URL(), "ng/upload")
	if want := p.URL() + "/v2/ng/upload/blobs/uploads/"; !strings.HasPrefix(loc, want) {
		t.Fatalf("upload Location %s, want one under %s", loc, want)
	}
	send := func(method string, size int) int {
		req, _ := http.NewRequest(method, withDigest(loc, "sha256:"+strings.Repeat("0", 64)), bytes.NewReader(make([]byte, size)))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := send(http.MethodPut, 2<<20); got != http.StatusRequestEntityTooLarge {
		t.Errorf("PUT of 2 MiB through a 1m limit: %d, want 413", got)
	}
	if got := send(http.MethodPatch, 10); got != http.StatusMethodNotAllowed {
		t.Errorf("PATCH: %d, want 405", got)
	}
	var put *NginxRequest
	reqs := p.RequestsWhen(t, func(reqs []NginxRequest) bool {
		for i := range reqs {
			if reqs[i].Method == http.MethodPut {
				put = &reqs[i]
			}
		}
		return put != nil
	})
	if put == nil || put.Status != http.StatusRequestEntityTooLarge || put.Length <= 0 || put.Length >= 2<<20 {
		t.Errorf("access log %+v: want the PUT, refused with 413 before its body was read", reqs)
	}
}
