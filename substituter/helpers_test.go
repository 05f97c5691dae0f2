package substituter_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/internal/serving"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
	"github.com/nixoci/nixoci/substituter"
)

// hexSHA256 is the hex encoding of the SHA-256 of data.
func hexSHA256(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// Synthetic store paths, shared with the other packages' tests.
var (
	nix32       = fixture.Nix32
	baseName    = fixture.BaseName
	storePathOf = fixture.StorePath
	makeNAR     = fixture.NAR
	compress    = fixture.Compress
)

// hashPart is the 32-character hash part of a store path of name.
func hashPart(name string) string { return baseName(name)[:32] }

// storedKey is the key that signs the narinfos of test paths before they
// are stored, so that every stored artifact carries one signature.
var storedKey = testKey("stored-1", 1)

// testKey is a deterministic signing key.
func testKey(name string, seed byte) narinfo.SecretKey {
	return narinfo.SecretKey{Name: name, Key: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))}
}

// testPath is a synthetic store path with a real NAR.
type testPath struct {
	Name      string
	StorePath string
	Hash      string // hash part, the tag and narinfo name
	NAR       []byte // uncompressed
	File      []byte // compressed, the NAR blob
	Comp      spec.Compression
	Info      *narinfo.NarInfo
}

// FileNix32 is the nix-base32 FileHash without its prefix, as in NAR URLs.
func (p *testPath) FileNix32() string { return nix32(p.File) }

// FileDigest is the OCI digest of the NAR blob.
func (p *testPath) FileDigest() digest.Digest {
	return digest.NewDigestFromEncoded(digest.SHA256, hexSHA256(p.File))
}

// NarURLPath is the request path of the NAR, "/nar/<nix32>.nar.<ext>".
func (p *testPath) NarURLPath() string { return "/" + spec.NarURL(p.FileNix32(), p.Comp) }

// NarInfoPath is the request path of the narinfo.
func (p *testPath) NarInfoPath() string { return "/" + p.Hash + ".narinfo" }

// newTestPath makes a store path named name whose NAR is derived from
// content, compressed with comp, referencing refs (and itself if self).
func newTestPath(t testing.TB, name, content string, comp spec.Compression, refs ...*testPath) *testPath {
	t.Helper()
	n := makeNAR(t, content)
	file := compress(t, n, comp)
	fileHash, err := narinfo.HashFromHex(hexSHA256(file))
	if err != nil {
		t.Fatal(err)
	}
	narHash, err := narinfo.HashFromHex(hexSHA256(n))
	if err != nil {
		t.Fatal(err)
	}
	refNames := []string{}
	for _, r := range refs {
		refNames = append(refNames, filepath.Base(r.StorePath))
	}
	slices.Sort(refNames)
	info := &narinfo.NarInfo{
		StorePath:   storePathOf(name),
		URL:         spec.NarURL(nix32(file), comp),
		Compression: string(comp),
		FileHash:    fileHash,
		FileSize:    uint64(len(file)),
		NarHash:     narHash,
		NarSize:     uint64(len(n)),
		References:  refNames,
		Deriver:     baseName(name + ".drv"),
		System:      "x86_64-linux",
	}
	if err := info.AddSignature(storedKey); err != nil {
		t.Fatal(err)
	}
	return &testPath{Name: name, StorePath: info.StorePath, Hash: hashPart(name), NAR: n, File: file, Comp: comp, Info: info}
}

// store writes p's artifact (NAR blob, narinfo blob, manifest, tag) to dst.
func (p *testPath) store(t testing.TB, dst backend.Target) artifact.PathArtifact {
	t.Helper()
	info := *p.Info
	art, err := artifact.StoreArtifact(context.Background(), dst, &info, func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(p.File)), nil
	})
	if err != nil {
		t.Fatalf("StoreArtifact(%s): %v", p.StorePath, err)
	}
	return art
}

// storedNarInfo reads the narinfo blob of p's artifact from the layout.
func storedNarInfo(t testing.TB, l backend.Target, art artifact.PathArtifact) []byte {
	t.Helper()
	rc, err := l.Fetch(context.Background(), art.NarInfo)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

var newLayout = fixture.Layout

// blobFile is the layout file holding the blob with digest d.
func blobFile(l *backend.Layout, d digest.Digest) string {
	return filepath.Join(l.Dir(), "blobs", d.Algorithm().String(), d.Encoded())
}

// syncBuffer is a goroutine-safe buffer for logs. If flush is set,
// String calls it first (to write out a buffered access log).
type syncBuffer struct {
	mu    sync.Mutex
	b     bytes.Buffer
	flush func() error
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	if s.flush != nil {
		s.flush()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testLogger logs everything, as text, to a buffer it returns.
func testLogger() (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// newServer makes a Server, failing the test on error. A nil Logger in
// opts is replaced by one writing to the returned buffer, and so is the
// access log with AccessLog set.
func newServer(t testing.TB, opts substituter.Options) (*substituter.Server, *syncBuffer) {
	t.Helper()
	var logs *syncBuffer
	if opts.Logger == nil {
		opts.Logger, logs = testLogger()
		if opts.AccessLog && opts.AccessLogTo == nil {
			opts.AccessLogTo = serving.NewAccessLog(logs)
			logs.flush = opts.AccessLogTo.Flush
			t.Cleanup(func() { opts.AccessLogTo.Close() })
		}
	}
	s, err := substituter.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s, logs
}

// backends makes Backends of ts, named backend0, backend1, …, with the
// default options.
func backends(ts ...backend.Target) *serving.Backends {
	return backendsWith(serving.BackendOptions{}, ts...)
}

// backendsWith makes Backends of ts with opts.
func backendsWith(opts serving.BackendOptions, ts ...backend.Target) *serving.Backends {
	var list []serving.Backend
	for i, t := range ts {
		list = append(list, serving.Backend{Name: "backend" + strconv.Itoa(i), Target: t})
	}
	b, err := serving.NewBackends(list, opts)
	if err != nil {
		panic(err) // only with no target: a mistake in the test
	}
	return b
}

// response is a recorded response.
type response struct {
	Code   int
	Header http.Header
	Body   string
}

// parseRequest parses "method target" as a server reads a request line:
// target is not cleaned, resolved or escaped.
func parseRequest(method, target string, body io.Reader, header ...string) (*http.Request, error) {
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\nHost: cache.test\r\n")
	for i := 0; i+1 < len(header); i += 2 {
		b.WriteString(header[i] + ": " + header[i+1] + "\r\n")
	}
	b.WriteString("\r\n")
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(b.String())))
	if err != nil {
		return nil, err
	}
	req.RemoteAddr = "192.0.2.1:1234"
	if body != nil {
		req.Body = io.NopCloser(body)
		req.ContentLength = -1
	}
	return req, nil
}

// do sends a request straight to the handler. target is sent as the
// request-target, as a client would write it on the wire.
func do(t testing.TB, h http.Handler, method, target string, body io.Reader, header ...string) response {
	t.Helper()
	req, err := parseRequest(method, target, body, header...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return response{rec.Code, rec.Result().Header, rec.Body.String()}
}

// get is do with GET and no body.
func get(t testing.TB, h http.Handler, target string, header ...string) response {
	t.Helper()
	return do(t, h, http.MethodGet, target, nil, header...)
}

// rawRequest sends method target over the network to srv with target exactly
// as written (no client-side cleaning or escaping).
func rawRequest(t testing.TB, srv *httptest.Server, method, target string, body io.Reader, header ...string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+"/", body)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = target
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp, data, err
}

// scrape reads /metrics from h with the Prometheus text parser, failing
// the test unless it parses cleanly with HELP and TYPE on every metric.
// Series are keyed "name" or "name{k="v",…}", labels sorted by name;
// histograms appear as name_count and name_sum.
func scrape(t testing.TB, h http.Handler) map[string]float64 {
	t.Helper()
	r := get(t, h, "/metrics")
	if r.Code != 200 || !strings.HasPrefix(r.Header["Content-Type"][0], "text/plain") {
		t.Fatalf("GET /metrics: %d %q", r.Code, r.Header.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(r.Body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, r.Body)
	}
	series := map[string]float64{}
	for name, f := range families {
		if f.GetHelp() == "" || f.Type == nil {
			t.Errorf("%s has no HELP or TYPE", name)
		}
		for _, m := range f.Metric {
			var labels []string
			for _, l := range m.Label { // sorted by name by the parser
				labels = append(labels, l.GetName()+"="+strconv.Quote(l.GetValue()))
			}
			key := name
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				series[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				series[key] = m.Gauge.GetValue()
			case m.Untyped != nil:
				series[key] = m.Untyped.GetValue()
			case m.Histogram != nil:
				k := strings.Replace(key, name, name+"_count", 1)
				series[k] = float64(m.Histogram.GetSampleCount())
				series[strings.Replace(key, name, name+"_sum", 1)] = m.Histogram.GetSampleSum()
			}
		}
	}
	return series
}

// metricValue returns the value of the series named exactly series (as
// scrape keys them) in /metrics, and whether it is there.
func metricValue(t testing.TB, h http.Handler, series string) (float64, bool) {
	t.Helper()
	v, ok := scrape(t, h)[series]
	return v, ok
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// calls records what reached a backend.
type calls struct {
	mu             sync.Mutex
	fetchReference []string
	resolveBlob    []digest.Digest
	fetch          []digest.Digest
	push           []digest.Digest
	other          []string
}

func (c *calls) add(list *[]string, s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	*list = append(*list, s)
}

func (c *calls) addDigest(list *[]digest.Digest, d digest.Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	*list = append(*list, d)
}

// total is the number of backend operations recorded.
func (c *calls) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.fetchReference) + len(c.resolveBlob) + len(c.fetch) + len(c.push) + len(c.other)
}

// reset forgets what was recorded.
func (c *calls) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fetchReference, c.resolveBlob, c.fetch, c.push, c.other = nil, nil, nil, nil, nil
}

func (c *calls) fetchReferences() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.fetchReference)
}

func (c *calls) resolveBlobs() []digest.Digest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.resolveBlob)
}

func (c *calls) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, r := range c.fetchReference {
		b.WriteString("FetchReference " + r + "\n")
	}
	for _, d := range c.resolveBlob {
		b.WriteString("ResolveBlob " + d.String() + "\n")
	}
	for _, d := range c.fetch {
		b.WriteString("Fetch " + d.String() + "\n")
	}
	for _, d := range c.push {
		b.WriteString("Push " + d.String() + "\n")
	}
	for _, o := range c.other {
		b.WriteString(o + "\n")
	}
	return b.String()
}

// counting wraps a Target and records every operation. If
// beforeFetchReference is set, it runs before each FetchReference.
type counting struct {
	backend.Target
	calls
	beforeFetchReference func(ref string)
}

func (c *counting) FetchReference(ctx context.Context, ref string) (ocispec.Descriptor, io.ReadCloser, error) {
	c.add(&c.fetchReference, ref)
	if c.beforeFetchReference != nil {
		c.beforeFetchReference(ref)
	}
	return c.Target.FetchReference(ctx, ref)
}

func (c *counting) ResolveBlob(ctx context.Context, d digest.Digest) (ocispec.Descriptor, error) {
	c.addDigest(&c.resolveBlob, d)
	return c.Target.ResolveBlob(ctx, d)
}

func (c *counting) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	c.addDigest(&c.fetch, desc.Digest)
	return c.Target.Fetch(ctx, desc)
}

func (c *counting) Push(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	c.addDigest(&c.push, desc.Digest)
	return c.Target.Push(ctx, desc, r)
}

func (c *counting) Exists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	c.add(&c.other, "Exists "+desc.Digest.String())
	return c.Target.Exists(ctx, desc)
}

func (c *counting) Resolve(ctx context.Context, ref string) (ocispec.Descriptor, error) {
	c.add(&c.other, "Resolve "+ref)
	return c.Target.Resolve(ctx, ref)
}

func (c *counting) Tag(ctx context.Context, desc ocispec.Descriptor, ref string) error {
	c.add(&c.other, "Tag "+ref)
	return c.Target.Tag(ctx, desc, ref)
}

func (c *counting) PushReference(ctx context.Context, desc ocispec.Descriptor, r io.Reader, ref string) error {
	c.add(&c.other, "PushReference "+ref)
	return c.Target.PushReference(ctx, desc, r, ref)
}

// Ping is not recorded: /healthz is meant to reach the backend.
func (c *counting) Ping(ctx context.Context) error { return c.Target.Ping(ctx) }

// failing is a backend that cannot be reached: every operation fails with
// an error wrapping backend.ErrUnreachable.
type failing struct{ calls atomic.Int64 }

func (f *failing) err(op string) error {
	f.calls.Add(1)
	return &unreachableError{op}
}

type unreachableError struct{ op string }

func (e *unreachableError) Error() string {
	return "registry.test/repo: " + e.op + ": " + backend.ErrUnreachable.Error() + ": connection refused"
}
func (e *unreachableError) Unwrap() error { return backend.ErrUnreachable }

func (f *failing) Fetch(context.Context, ocispec.Descriptor) (io.ReadCloser, error) {
	return nil, f.err("fetch")
}
func (f *failing) Exists(context.Context, ocispec.Descriptor) (bool, error) {
	return false, f.err("exists")
}
func (f *failing) Push(context.Context, ocispec.Descriptor, io.Reader) error { return f.err("push") }
func (f *failing) Resolve(context.Context, string) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, f.err("resolve")
}
func (f *failing) Tag(context.Context, ocispec.Descriptor, string) error { return f.err("tag") }
func (f *failing) FetchReference(context.Context, string) (ocispec.Descriptor, io.ReadCloser, error) {
	return ocispec.Descriptor{}, nil, f.err("fetch reference")
}
func (f *failing) PushReference(context.Context, ocispec.Descriptor, io.Reader, string) error {
	return f.err("push reference")
}
func (f *failing) ResolveBlob(context.Context, digest.Digest) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, f.err("resolve blob")
}
func (f *failing) Ping(context.Context) error                               { return f.err("ping") }
func (f *failing) Tags(context.Context, string, func([]string) error) error { return f.err("tags") }
func (f *failing) Referrers(context.Context, ocispec.Descriptor, string, func([]ocispec.Descriptor) error) error {
	return f.err("referrers")
}

var _ backend.Target = (*failing)(nil)
