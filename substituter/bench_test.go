package substituter_test

import (
	"net/http"
	"testing"

	"github.com/nixoci/nixoci/spec"
	"github.com/nixoci/nixoci/substituter"
)

// discard is a ResponseWriter that keeps only the status and headers.
type discard struct {
	h    http.Header
	code int
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(code int)        { d.code = code }

// BenchmarkNarInfoWarm: the server's own work for a narinfo served from
// memory, metrics included, without the network (access log off).
func BenchmarkNarInfoWarm(b *testing.B) {
	l := newLayout(b)
	p := newTestPath(b, "bench-1", "bench", spec.CompressionZstd)
	p.store(b, l)
	s, _ := newServer(b, substituter.Options{Backends: backends(l)})
	serveWarm(b, s, p)
}

func serveWarm(b *testing.B, s http.Handler, p *testPath) {
	req, err := parseRequest(http.MethodGet, p.NarInfoPath(), nil)
	if err != nil {
		b.Fatal(err)
	}
	w := &discard{h: http.Header{}}
	s.ServeHTTP(w, req)
	if w.code != 0 && w.code != 200 {
		b.Fatalf("GET %s: %d", p.NarInfoPath(), w.code)
	}
	b.ReportAllocs()
	for b.Loop() {
		s.ServeHTTP(w, req)
	}
}
