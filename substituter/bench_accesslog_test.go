package substituter_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nixoci/nixoci/internal/serving"
	"github.com/nixoci/nixoci/spec"
	"github.com/nixoci/nixoci/substituter"
)

// BenchmarkNarInfoWarmAccessLog is BenchmarkNarInfoWarm with the access
// log on, written to a file.
func BenchmarkNarInfoWarmAccessLog(b *testing.B) {
	l := newLayout(b)
	p := newTestPath(b, "bench-1", "bench", spec.CompressionZstd)
	p.store(b, l)
	f, err := os.Create(filepath.Join(b.TempDir(), "access.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	log := serving.NewAccessLog(f)
	defer log.Close()
	s, _ := newServer(b, substituter.Options{Backends: backends(l), AccessLog: true, AccessLogTo: log})
	serveWarm(b, s, p)
}
