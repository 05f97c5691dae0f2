package backend_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/internal/testenv"
)

// remoteFixture is a real registry holding one 1 MiB blob, and the
// waits retries asked for (they are not waited).
type remoteFixture struct {
	reg   *testenv.Registry
	data  []byte
	desc  ocispec.Descriptor
	waits *[]time.Duration
}

func newRemoteFixture(t *testing.T) remoteFixture {
	t.Helper()
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	waits := new([]time.Duration)
	backend.SetRetrySleep(t, func(ctx context.Context, d time.Duration) bool {
		*waits = append(*waits, d)
		return ctx.Err() == nil
	})
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	data := make([]byte, 1<<20)
	rand.New(rand.NewSource(1)).Read(data)
	desc := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := open(t, reg.Ref("r")).Push(t.Context(), desc, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	return remoteFixture{reg, data, desc, waits}
}

func open(t *testing.T, ref string) backend.Target {
	t.Helper()
	r, err := backend.ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	tgt, err := backend.Open(t.Context(), r, backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return tgt
}

func isBlobGET(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:")
}

// TestRemoteFetchResumes: a blob download cut off mid-body, again and
// again, is resumed where it stopped and reads whole and verified, in at
// most RetryAttempts requests.
func TestRemoteFetchResumes(t *testing.T) {
	fx := newRemoteFixture(t)
	p := testenv.StartFaultProxy(t, fx.reg.Addr, testenv.FaultOptions{Reset: 1, Only: isBlobGET})
	rc, err := open(t, p.Ref("r")).Fetch(t.Context(), fx.desc)
	if err != nil {
		t.Fatal(err)
	}
	vr, err := backend.VerifyReader(rc, fx.desc)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(vr)
	vr.Close()
	if err != nil || !bytes.Equal(got, fx.data) {
		t.Fatalf("read %d bytes through resets, error %v; want the %d-byte blob", len(got), err, len(fx.data))
	}
	if resets := p.Counts()[testenv.FaultReset]; resets != 2 {
		t.Errorf("%d resets injected, want 2 (the proxy's MaxConsecutive)", resets)
	}
	if n := p.Requests(); n != 3 {
		t.Errorf("%d requests for one blob cut twice, want 3", n)
	}
}

// TestRemoteFetchSeeks: a blob body seeks (by Range requests), as the
// substituter's Range answers need.
func TestRemoteFetchSeeks(t *testing.T) {
	fx := newRemoteFixture(t)
	rc, err := open(t, fx.reg.Ref("r")).Fetch(t.Context(), fx.desc)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	s, ok := rc.(io.ReadSeeker)
	if !ok {
		t.Fatal("the body of a registry that serves ranges cannot seek")
	}
	for _, off := range []int64{fx.desc.Size / 2, 0, fx.desc.Size - 10} {
		if _, err := s.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(s)
		if err != nil || !bytes.Equal(got, fx.data[off:]) {
			t.Errorf("after seeking to %d: read %d bytes, error %v; want the %d from there", off, len(got), err, fx.desc.Size-off)
		}
	}
}

// TestRemotePushRetries: an upload whose body is cut off is sent again
// (the content rewound) until the registry has it.
func TestRemotePushRetries(t *testing.T) {
	fx := newRemoteFixture(t)
	data := bytes.Repeat([]byte("nixoci "), 100000)
	desc := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(data), Size: int64(len(data))}
	p := testenv.StartFaultProxy(t, fx.reg.Addr, testenv.FaultOptions{Reset: 1, Only: func(r *http.Request) bool {
		return r.Method == http.MethodPut
	}})
	if err := open(t, p.Ref("r")).Push(t.Context(), desc, bytes.NewReader(data)); err != nil {
		t.Fatalf("push through resets: %v", err)
	}
	if ok, err := open(t, fx.reg.Ref("r")).Exists(t.Context(), desc); !ok || err != nil {
		t.Errorf("the registry does not have the pushed blob: %v, %v", ok, err)
	}
	if resets := p.Counts()[testenv.FaultReset]; resets != 2 {
		t.Errorf("%d resets injected, want 2", resets)
	}
}

// TestRemoteGivesUp: a registry that always answers 503 is asked exactly
// RetryAttempts times, and the error names it, the request and the
// status; a 429 with Retry-After: 1 makes the next wait 1 s.
func TestRemoteGivesUp(t *testing.T) {
	fx := newRemoteFixture(t)
	p := testenv.StartFaultProxy(t, fx.reg.Addr, testenv.FaultOptions{Status503: 1, MaxConsecutive: -1})
	_, err := open(t, p.Ref("r")).Exists(t.Context(), fx.desc)
	if !errors.Is(err, backend.ErrRegistry) {
		t.Fatalf("Exists against endless 503s = %v, want ErrRegistry", err)
	}
	for _, want := range []string{p.Ref("r"), fx.desc.Digest.String(), "503"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if n := p.Requests(); n != backend.RetryAttempts {
		t.Errorf("%d requests, want RetryAttempts = %d", n, backend.RetryAttempts)
	}
	if n := len(*fx.waits); n != backend.RetryAttempts-1 {
		t.Errorf("%d waits, want %d", n, backend.RetryAttempts-1)
	}

	*fx.waits = nil
	p = testenv.StartFaultProxy(t, fx.reg.Addr, testenv.FaultOptions{TooMany: 1})
	if ok, err := open(t, p.Ref("r")).Exists(t.Context(), fx.desc); !ok || err != nil {
		t.Fatalf("Exists after two 429s: %v, %v", ok, err)
	}
	if w := *fx.waits; len(w) != 2 || w[0] != time.Second || w[1] != time.Second {
		t.Errorf("waits after two 429s with Retry-After: 1: %v, want [1s 1s]", w)
	}
}

// TestRemoteTagsOfUnknownRepository: a repository nothing was pushed to
// (docker-registry answers 404 NAME_UNKNOWN) lists no tags, without an
// error.
func TestRemoteTagsOfUnknownRepository(t *testing.T) {
	f := newRemoteFixture(t)
	var got []string
	list := func(tags []string) error { got = append(got, tags...); return nil }
	if err := open(t, f.reg.Ref("never-pushed")).Tags(t.Context(), "", list); err != nil || len(got) != 0 {
		t.Errorf("tags of an unknown repository: %v, %v; want none, no error", got, err)
	}
	// Any other failure is still one: a registry that does not answer.
	f.reg.Stop()
	if err := open(t, f.reg.Ref("never-pushed")).Tags(t.Context(), "", list); err == nil {
		t.Error("listing tags of a stopped registry: no error")
	}
}
