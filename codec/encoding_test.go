package codec

import (
	"bytes"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
)

// compressWith runs a real compressor (xz, zstd, gzip, bzip2) on data.
func compressWith(t *testing.T, data []byte, name string, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed", name)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return out
}

func TestDecodeContent(t *testing.T) {
	data := []byte(strings.Repeat("StorePath: /nix/store/x\nReferences: \n", 500))
	var br bytes.Buffer
	w := brotli.NewWriterLevel(&br, 5)
	w.Write(data)
	w.Close()
	bodies := map[string][]byte{
		"xz":       compressWith(t, data, "xz", "-6", "-c"),
		"zstd":     compressWith(t, data, "zstd", "-q", "-c"),
		"gzip":     compressWith(t, data, "gzip", "-c"),
		"bzip2":    compressWith(t, data, "bzip2", "-c"),
		"br":       br.Bytes(),
		"identity": data,
		"":         data,
	}
	for enc, body := range bodies {
		r, err := DecodeContent(bytes.NewReader(body), enc, int64(len(data)))
		if err != nil {
			t.Fatalf("%s: %v", enc, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: %d bytes, %v", enc, len(got), err)
		}
		// One byte less than the content is refused, not cut short.
		r, err = DecodeContent(bytes.NewReader(body), enc, int64(len(data))-1)
		if err == nil {
			_, err = io.ReadAll(r)
		}
		if !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s over the limit: %v, want ErrEncoding", enc, err)
		}
	}
	if _, err := DecodeContent(bytes.NewReader(data), "lz4", 1<<20); !errors.Is(err, ErrEncoding) {
		t.Errorf("lz4: %v, want ErrEncoding", err)
	}
	if _, err := DecodeContent(bytes.NewReader([]byte("not gzip")), "gzip", 1<<20); !errors.Is(err, ErrEncoding) {
		t.Errorf("bad gzip: %v", err)
	}
}

// TestXzDictionaryBounded: an xz body asking for a 1.5 GiB dictionary is
// refused before any decoder allocates it (when the block header is
// read: the xz guard of NewReader).
func TestXzDictionaryBounded(t *testing.T) {
	decode := func(body []byte) error {
		r, err := DecodeContent(bytes.NewReader(body), "xz", 1<<20)
		if err == nil {
			_, err = io.ReadAll(r)
		}
		return err
	}
	body := compressWith(t, []byte("tiny"), "xz", "--lzma2=dict=1536MiB", "-c", "--memlimit-compress=0")
	if err := decode(body); !errors.Is(err, ErrEncoding) || !strings.Contains(err.Error(), "dictionary") {
		t.Fatalf("huge dictionary: %v", err)
	}
	// Two streams concatenated, as Nix reads them, are walked too.
	two := append(compressWith(t, []byte("a"), "xz", "-c"), body...)
	if err := decode(two); !errors.Is(err, ErrEncoding) || !strings.Contains(err.Error(), "dictionary") {
		t.Fatalf("huge dictionary in a second stream: %v", err)
	}
	if err := decode([]byte("\xfd7zXZ\x00garbage")); !errors.Is(err, ErrEncoding) {
		t.Fatalf("garbage: %v", err)
	}
}
