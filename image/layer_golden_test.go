package image

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"testing"

	"github.com/nixoci/nixoci/internal/testenv"
	"github.com/nixoci/nixoci/spec"
)

// TestLayerCompressionGolden pins the bytes of each layer compression for
// a fixed input, as codec's golden test does for NARs: layer digests are
// reused across images and hosts (spec/SPEC.md sections 7 and 8), so a
// library upgrade that changes them must fail here, not pass silently.
func TestLayerCompressionGolden(t *testing.T) {
	in := testenv.SampleData(4<<20, 7)
	for _, tc := range []struct {
		comp spec.LayerCompression
		want string
	}{
		{spec.LayerGzip, "7246512430d69abef0be12d3bd9e846d0420e5861ffcafda98eea889ae48db31"},
		{spec.LayerZstd, "f98cd596151f307c5bbbb095f6a1dd508ac3fca6edb4a58dbde8cfb2ad434edb"},
	} {
		var out bytes.Buffer
		w, err := layerCompressor(&out, tc.comp)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(in); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(out.Bytes())
		if got := hex.EncodeToString(sum[:]); got != tc.want {
			t.Errorf("%s layer of %d bytes is now sha256:%s (%d bytes), was sha256:%s.\n"+
				"The layer bytes nixoci writes changed (a library upgrade or a settings change): this is a format "+
				"decision (spec/SPEC.md section 7), since layers converted before would no longer be reproduced. "+
				"Keep the old output, or change the format version in the spec and only then this digest.",
				tc.comp, len(in), got, out.Len(), tc.want)
		}
		if tc.comp == spec.LayerGzip { // read by the standard library, not the writer's
			r, err := gzip.NewReader(&out)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, in) {
				t.Errorf("gzip layer does not read back: %v", err)
			}
		}
	}
}
