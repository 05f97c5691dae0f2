package testenv

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// proxyTestClient talks to the proxy without retries or connection reuse,
// so that every request is one attempt on a fresh connection.
func proxyTestClient() *http.Client {
	return &http.Client{
		Timeout:   20 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// uploadBlob pushes data as a blob of repo at base (http://host:port)
// with a POST and a monolithic PUT, and returns its digest.
func uploadBlob(t *testing.T, c *http.Client, base, repo string, data []byte) string {
	t.Helper()
	sum := sha256.Sum256(data)
	dgst := "sha256:" + hex.EncodeToString(sum[:])
	loc := startUpload(t, c, base, repo)
	req, _ := http.NewRequest(http.MethodPut, withDigest(loc, dgst), bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("PUT %s: %v", loc, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT %s: %s", loc, resp.Status)
	}
	return dgst
}

// startUpload opens an upload session and returns its absolute URL.
func startUpload(t *testing.T, c *http.Client, base, repo string) string {
	t.Helper()
	resp, err := c.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatalf("POST upload: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST upload: %s", resp.Status)
	}
	loc := resp.Header.Get("Location")
	if strings.HasPrefix(loc, "/") {
		loc = base + loc
	}
	return loc
}

func withDigest(loc, dgst string) string {
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	return loc + sep + "digest=" + dgst
}

// TestFaultProxyForwards: with no fault probabilities the proxy is a
// transparent, counting proxy: a blob uploads through it (the session URL
// the registry hands out points back at the proxy), reads back intact,
// and every request is logged with its status and digest.
func TestFaultProxyForwards(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	p := StartFaultProxy(t, reg.Addr, FaultOptions{Seed: 1})
	c := proxyTestClient()
	data := bytes.Repeat([]byte("forwarded blob "), 10000)

	loc := startUpload(t, c, p.URL(), "fp/forward")
	if !strings.HasPrefix(loc, p.URL()+"/") {
		t.Errorf("upload session %s does not point back at the proxy %s", loc, p.URL())
	}
	sum := sha256.Sum256(data)
	dgst := "sha256:" + hex.EncodeToString(sum[:])
	req, _ := http.NewRequest(http.MethodPut, withDigest(loc, dgst), bytes.NewReader(data))
	resp, err := c.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT through the proxy: %v %v", err, resp)
	}
	resp.Body.Close()

	resp, err = c.Get(p.URL() + "/v2/fp/forward/blobs/" + dgst)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("GET through the proxy: %d bytes, err %v; want %d bytes", len(got), err, len(data))
	}
	// And the registry really has it, read without the proxy.
	resp, err = c.Head(reg.URL() + "/v2/fp/forward/blobs/" + dgst)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD at the registry itself: %v %v", err, resp)
	}

	if n := p.Faults(); n != 0 {
		t.Errorf("faults injected with all probabilities 0: %v", p.Counts())
	}
	if n := p.Requests(); n != 3 {
		t.Errorf("Requests() = %d, want 3 (POST, PUT, GET)", n)
	}
	log := p.Log()
	want := []struct {
		method string
		status int
	}{{"POST", 202}, {"PUT", 201}, {"GET", 200}}
	if len(log) != len(want) {
		t.Fatalf("log has %d entries, want %d: %+v", len(log), len(want), log)
	}
	for i, w := range want {
		if log[i].Method != w.method || log[i].Status != w.status || log[i].Fault != "" {
			t.Errorf("log[%d] = %+v, want %s answered %d", i, log[i], w.method, w.status)
		}
	}
	if log[1].Digest() != dgst {
		t.Errorf("PUT logged with digest %q, want %s", log[1].Digest(), dgst)
	}
}

// TestFaultProxyInjectsEveryKind: with every probability non-zero, each
// kind of fault really reaches the client as described, the client's
// observations match Counts and the log request by request, and no key
// is faulted more than MaxConsecutive times in a row.
func TestFaultProxyInjectsEveryKind(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	c := proxyTestClient()
	data := make([]byte, 64<<10)
	for i := range data {
		data[i] = byte(i * 7)
	}
	dgst := uploadBlob(t, c, reg.URL(), "fp/kinds", data)
	const stallFor = 300 * time.Millisecond
	p := StartFaultProxy(t, reg.Addr, FaultOptions{
		Seed: 7, Reset: 0.16, Status500: 0.16, Status503: 0.16, TooMany: 0.16, Stall: 0.16,
		StallFor: stallFor,
	})

	const n = 80
	seen := map[string]int{}
	var observed []string
	for i := range n {
		start := time.Now()
		kind, err := observeGet(c, p.URL()+"/v2/fp/kinds/blobs/"+dgst, data)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if kind == FaultStall && time.Since(start) < stallFor {
			t.Errorf("request %d: stall ended after %v, before StallFor %v", i, time.Since(start), stallFor)
		}
		if kind != "" {
			seen[kind]++
		}
		observed = append(observed, kind)
	}
	counts := p.Counts()
	t.Logf("%d requests: %s", n, FormatCounts(counts))
	for _, k := range []string{FaultReset, Fault500, Fault503, Fault429, FaultStall} {
		if counts[k] == 0 {
			t.Errorf("no %s fault injected in %d requests", k, n)
		}
		if counts[k] != seen[k] {
			t.Errorf("%s: proxy counted %d, client observed %d", k, counts[k], seen[k])
		}
	}
	if p.Requests() != n {
		t.Errorf("Requests() = %d, want %d", p.Requests(), n)
	}
	log := p.Log()
	run := 0
	for i, rec := range log {
		if rec.Fault != observed[i] {
			t.Errorf("request %d: logged fault %q, client observed %q", i, rec.Fault, observed[i])
		}
		if rec.Fault == "" {
			run = 0
			continue
		}
		if run++; run > 2 {
			t.Errorf("request %d: %d faults in a row on one key, MaxConsecutive is 2", i, run)
		}
	}
}

// observeGet GETs url and names what the client saw: "" for the full
// body, or the fault kind its symptoms identify.
func observeGet(c *http.Client, url string, want []byte) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		// Nothing came back: a stall or a reset before the headers (which
		// a GET with a body never gets).
		return FaultStall, nil
	}
	body, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch resp.StatusCode {
	case 500:
		return Fault500, nil
	case 503:
		return Fault503, nil
	case 429:
		if ra := resp.Header.Get("Retry-After"); ra != "1" {
			return "", fmt.Errorf("429 with Retry-After %q, want 1", ra)
		}
		return Fault429, nil
	case 200:
		if rerr == nil && bytes.Equal(body, want) {
			return "", nil
		}
		if errors.Is(rerr, io.ErrUnexpectedEOF) && len(body) == len(want)/2 && bytes.Equal(body, want[:len(body)]) {
			return FaultReset, nil
		}
		return "", fmt.Errorf("200 with %d bytes and read error %v", len(body), rerr)
	}
	return "", fmt.Errorf("unexpected status %s", resp.Status)
}

// TestFaultProxyMaxConsecutive: with a fault certain, each key is faulted
// exactly MaxConsecutive times, then passes once; keys count separately;
// a negative MaxConsecutive never lets a request through; Only limits
// faults to the requests it selects.
func TestFaultProxyMaxConsecutive(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	c := proxyTestClient()
	status := func(method, url string) int {
		t.Helper()
		req, _ := http.NewRequest(method, url, nil)
		resp, err := c.Do(req)
		if err != nil {
			return -1
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}

	p := StartFaultProxy(t, reg.Addr, FaultOptions{Seed: 3, Status503: 1})
	var got []int
	for range 6 {
		got = append(got, status("GET", p.URL()+"/v2/"))
		got = append(got, status("GET", p.URL()+"/v2/fp/none/tags/list"))
	}
	want := []int{503, 503, 503, 503, 200, 404, 503, 503, 503, 503, 200, 404}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("statuses with MaxConsecutive 2 (two keys interleaved) = %v, want %v", got, want)
	}
	if c := p.Counts(); c[Fault503] != 8 || len(c) != 1 {
		t.Errorf("Counts() = %v, want 8 of 503", c)
	}

	forever := StartFaultProxy(t, reg.Addr, FaultOptions{Seed: 3, Status503: 1, MaxConsecutive: -1})
	for i := range 10 {
		if s := status("GET", forever.URL()+"/v2/"); s != 503 {
			t.Fatalf("request %d with MaxConsecutive -1: %d, want 503", i, s)
		}
	}

	onlyHead := StartFaultProxy(t, reg.Addr, FaultOptions{Seed: 3, Reset: 1, MaxConsecutive: -1,
		Only: func(r *http.Request) bool { return r.Method == http.MethodHead }})
	for i := range 3 {
		if s := status("GET", onlyHead.URL()+"/v2/"); s != 200 {
			t.Errorf("GET %d not selected by Only: %d, want 200", i, s)
		}
		if s := status("HEAD", onlyHead.URL()+"/v2/"); s != -1 {
			t.Errorf("HEAD %d with a reset: got status %d, want a broken connection", i, s)
		}
	}
	if c := onlyHead.Counts(); c[FaultReset] != 3 || onlyHead.Requests() != 6 {
		t.Errorf("Only HEAD: counts %v of %d requests, want 3 resets of 6", c, onlyHead.Requests())
	}
}

// TestFaultProxyResetsUploads: a reset on a PUT breaks the connection
// after part of the body, the registry never sees that attempt, and the
// same upload session then completes (MaxConsecutive 1).
func TestFaultProxyResetsUploads(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	p := StartFaultProxy(t, reg.Addr, FaultOptions{Seed: 5, Reset: 1, MaxConsecutive: 1,
		Only: func(r *http.Request) bool { return r.Method == http.MethodPut }})
	c := proxyTestClient()
	data := bytes.Repeat([]byte{0xa5}, 1<<20)
	sum := sha256.Sum256(data)
	dgst := "sha256:" + hex.EncodeToString(sum[:])
	loc := startUpload(t, c, p.URL(), "fp/upload")
	put := func() (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodPut, withDigest(loc, dgst), bytes.NewReader(data))
		return c.Do(req)
	}
	if resp, err := put(); err == nil {
		resp.Body.Close()
		t.Fatalf("first PUT: %s, want a broken connection", resp.Status)
	} else {
		t.Logf("first PUT, reset: %v", err)
	}
	resp, err := c.Head(reg.URL() + "/v2/fp/upload/blobs/" + dgst)
	if err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("after the reset PUT the registry has the blob: %v %v", err, resp)
	}
	resp, err = put()
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("second PUT: %v %v", err, resp)
	}
	resp.Body.Close()
	resp, err = c.Head(reg.URL() + "/v2/fp/upload/blobs/" + dgst)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD at the registry after the upload: %v %v", err, resp)
	}
	if c := p.Counts(); c[FaultReset] != 1 {
		t.Errorf("Counts() = %v, want 1 reset", c)
	}
	var puts []int64
	for _, r := range p.Log() {
		if r.Method == http.MethodPut {
			puts = append(puts, r.BodyBytes)
		}
	}
	if want := []int64{int64(len(data)) / 2, int64(len(data))}; !slices.Equal(puts, want) {
		t.Errorf("body bytes read of the PUTs: %v, want %v (half, then all)", puts, want)
	}
}

// TestFaultProxyCutsUploads: a cut PATCH reaches the registry with half
// its body and leaves the client a broken connection.
func TestFaultProxyCutsUploads(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	p := StartFaultProxy(t, reg.Addr, FaultOptions{Cut: 1, MaxConsecutive: -1,
		Only: func(r *http.Request) bool { return r.Method == http.MethodPatch }})
	c := proxyTestClient()
	loc := startUpload(t, c, p.URL(), "fp/cut")
	data := bytes.Repeat([]byte{0x5a}, 1<<20)
	req, _ := http.NewRequest(http.MethodPatch, loc, bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("cut PATCH: %s, want a broken connection", resp.Status)
	}
	log := p.Log()
	if last := log[len(log)-1]; last.Fault != FaultCut || last.BodyBytes != int64(len(data))/2 {
		t.Errorf("cut PATCH logged as %+v, want fault %q with %d body bytes", last, FaultCut, len(data)/2)
	}
	if c := p.Counts(); c[FaultCut] != 1 {
		t.Errorf("Counts() = %v, want 1 cut", c)
	}
}
