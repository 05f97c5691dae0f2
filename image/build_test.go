package image_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/image"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// storeClosure stores a closure of one synthetic store path in l, tagged
// "c", and returns the path's artifact.
func storeClosure(t *testing.T, l *backend.Layout, name string) artifact.PathArtifact {
	t.Helper()
	nar := fixture.NAR(t, name)
	file := fixture.Compress(t, nar, spec.CompressionZstd)
	info := &narinfo.NarInfo{
		StorePath:   fixture.StorePath(name),
		URL:         spec.NarURL(fixture.Nix32(file), spec.CompressionZstd),
		Compression: string(spec.CompressionZstd),
		FileHash:    "sha256:" + fixture.Nix32(file),
		FileSize:    uint64(len(file)),
		NarHash:     "sha256:" + fixture.Nix32(nar),
		NarSize:     uint64(len(nar)),
		References:  []string{},
	}
	ctx := t.Context()
	art, err := artifact.StoreArtifact(ctx, l, info, func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(file)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cm, err := artifact.NewClosureManifests([]string{info.StorePath}, []artifact.PathArtifact{art}, "/nix/store", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Push(ctx, cm.CacheInfo.Descriptor, bytes.NewReader(cm.CacheInfo.Data)); err != nil {
		t.Fatal(err)
	}
	if err := l.PushReference(ctx, cm.Top.Descriptor, bytes.NewReader(cm.Top.Data), "c"); err != nil {
		t.Fatal(err)
	}
	return art
}

// damage flips a byte of the blob d in l, at the first occurrence of old
// in it if old is set (so that JSON stays JSON), else in the middle.
func damage(t *testing.T, l *backend.Layout, d digest.Digest, old, new string) {
	t.Helper()
	path := filepath.Join(l.Dir(), "blobs", "sha256", d.Encoded())
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if old == "" {
		data[len(data)/2] ^= 0xff
	} else {
		if !bytes.Contains(data, []byte(old)) {
			t.Fatalf("blob %s has no %q", d, old)
		}
		data = bytes.Replace(data, []byte(old), []byte(new), 1)
	}
	os.Chmod(path, 0o644)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBuildRefusesCorruptContent: a NAR blob or a stored layer record
// whose bytes no longer match their digest fails the build, naming the
// store path, instead of being converted or reused.
func TestBuildRefusesCorruptContent(t *testing.T) {
	ctx := t.Context()
	t.Run("NAR blob", func(t *testing.T) {
		src := fixture.Layout(t)
		art := storeClosure(t, src, "hello")
		damage(t, src, art.NAR.Digest, "", "")
		_, err := image.Build(ctx, src, "c", fixture.Layout(t), "img", image.Options{})
		if !errors.Is(err, backend.ErrHashMismatch) || !strings.Contains(err.Error(), art.Info.StorePath) {
			t.Fatalf("Build = %v, want ErrHashMismatch naming %s", err, art.Info.StorePath)
		}
	})
	t.Run("layer record", func(t *testing.T) {
		l := fixture.Layout(t)
		art := storeClosure(t, l, "hello")
		res, err := image.Build(ctx, l, "c", l, "img", image.Options{})
		if err != nil {
			t.Fatal(err)
		}
		// The record of the layer, as a later build finds it by its tag:
		// change its diff ID so that it still parses.
		rec, err := l.Resolve(ctx, spec.PathTag(art.Info.StorePath)+".layer.gzip")
		if err != nil {
			t.Fatal(err)
		}
		diffID := res.Images[0].Layers[0].DiffID.Encoded()
		other := strings.Map(func(r rune) rune {
			if r == '0' {
				return '1'
			}
			return '0'
		}, diffID[:1]) + diffID[1:]
		damage(t, l, rec.Digest, diffID, other)
		_, err = image.Build(ctx, l, "c", l, "img2", image.Options{})
		if !errors.Is(err, backend.ErrHashMismatch) {
			t.Fatalf("Build with a damaged layer record = %v, want ErrHashMismatch", err)
		}
	})
}

// TestBuildOptionErrors: options Build cannot use are OptionErrors naming
// the field, never a command-line flag.
func TestBuildOptionErrors(t *testing.T) {
	l := fixture.Layout(t)
	storeClosure(t, l, "hello")
	for _, tc := range []struct {
		opts   image.Options
		option string
	}{
		{image.Options{MaxLayers: 1}, "MaxLayers"},
		{image.Options{User: "me"}, "User"},
	} {
		_, err := image.Build(t.Context(), l, "c", l, "img", tc.opts)
		var opt *image.OptionError
		if !errors.As(err, &opt) || opt.Option != tc.option {
			t.Errorf("Build(%+v) = %v, want an OptionError for %s", tc.opts, err, tc.option)
		}
		if err != nil && strings.Contains(err.Error(), "--") {
			t.Errorf("library error %q names a flag", err)
		}
	}
	if _, err := l.Resolve(t.Context(), "img"); err == nil {
		t.Error("an image was tagged although its options were refused")
	}
}
