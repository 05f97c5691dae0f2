package codec

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/spec"
)

// goldenOutputs are the SHA-256 digests of what NewWriter writes for
// fixed inputs (SampleData, the same bytes on every Go version). They are
// the reproducibility promise of spec/SPEC.md section 7 made checkable: a
// library upgrade or a settings change that alters one byte fails here.
var goldenOutputs = []struct {
	name  string
	comp  spec.Compression
	size  int // of the input, SampleData(size, 7)
	chunk int // xz chunk size; 0: spec.XzChunkSize
	long  bool
	want  string
}{
	{"zstd, empty", spec.CompressionZstd, 0, 0, false, "429ed24358dddc6eff5fcf1c9a514fb568dcba9e383d8c065353b0446064bc1f"},
	{"zstd, 9 MiB (past the 8 MiB window)", spec.CompressionZstd, 9 << 20, 0, false, "38a737651b0842a5c562917d0dfe55c2c5c022ee2759ac484817f2cec0140fd1"},
	{"xz, empty", spec.CompressionXz, 0, 0, false, "2cc9e406030df2928e5b8cdf75cd454c34740cea56a2cd8c081da197f5617694"},
	{"xz, 3 MiB in one chunk", spec.CompressionXz, 3 << 20, 0, false, "d6e21f196d0792098cfd245551eddf65cca5b113b5cdc6ef034188b74baeeb5e"},
	{"xz, 3 MiB + 12345 bytes in 1 MiB chunks", spec.CompressionXz, 3<<20 + 12345, 1 << 20, false, "48baa9f73582971027884a2aeb81c9979fe3b14c23e08f91c0e10f5d305ab2b0"},
	{"xz, 33 MiB in the real 32 MiB chunks", spec.CompressionXz, 33 << 20, 0, true, "bd611a76eaedf9cbd13b131994a350ea29718509fc84c33b4155d1c94abc0b0d"},
}

// goldenInput pins SampleData itself, so that a change there is not
// mistaken for a change of the compressed format.
const goldenInput = "1f8922b3b0ddff656ba877764bc3e275e20e807b844cd551e84d76ccca0b7e98"

func TestGoldenOutputs(t *testing.T) {
	if got := hexSum(sample(1<<20, 7)); got != goldenInput {
		t.Fatalf("testenv.SampleData(1 MiB, 7) is now sha256:%s, was sha256:%s: the test input changed, not the codecs; "+
			"SampleData must stay stable for the digests below to mean anything", got, goldenInput)
	}
	for _, tc := range goldenOutputs {
		t.Run(tc.name, func(t *testing.T) {
			if tc.long && testing.Short() {
				t.Skipf("%d MiB of xz takes seconds; run without -short", tc.size>>20)
			}
			if tc.chunk != 0 {
				withChunkSize(t, tc.chunk)
			}
			in := sample(tc.size, 7)
			out := compress(t, tc.comp, in)
			if got := hexSum(out); got != tc.want {
				t.Errorf("%s of %d bytes is now sha256:%s (%d bytes), was sha256:%s.\n"+
					"The bytes nixoci writes changed (a library upgrade or a settings change): this is a format decision "+
					"(spec/SPEC.md section 7: the same NAR must give the same compressed bytes), since every stored "+
					"artifact's digest would stop being reproduced. Keep the old output (pin the library, restore the "+
					"setting), or change the format version in the spec and only then this digest.",
					tc.comp, tc.size, got, len(out), tc.want)
			}
			if got := decompress(t, tc.comp, out); !bytes.Equal(got, in) {
				t.Errorf("%s: round trip differs", tc.name)
			}
			if tc.comp == spec.CompressionXz {
				chunk := cmp.Or(tc.chunk, spec.XzChunkSize)
				if got, want := xzStreams(t, out), max(1, (tc.size+chunk-1)/chunk); got != want {
					t.Errorf("xz --list counts %d streams, want %d (one per %d-byte chunk)", got, want, chunk)
				}
			}
		})
	}
}

// xzStreams counts the streams of an xz file with the real xz tool.
func xzStreams(t *testing.T, data []byte) int {
	t.Helper()
	f := filepath.Join(t.TempDir(), "out.xz")
	if err := os.WriteFile(f, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(testenv.Tool(t, "xz"), "--robot", "--list", f).Output()
	if err != nil {
		t.Fatalf("xz --list: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if fields := strings.Split(line, "\t"); fields[0] == "totals" && len(fields) > 1 {
			n, err := strconv.Atoi(fields[1])
			if err != nil {
				t.Fatalf("xz --list totals %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("xz --robot --list printed no totals:\n%s", out)
	return 0
}

func hexSum(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
