package nar

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	gonar "github.com/nix-community/go-nix/pkg/nar"
)

// benchNAR is a NAR of 4000 small files (0 to ~2 KiB) in 40 directories,
// plus a symlink per directory.
func benchNAR(b *testing.B) []byte {
	b.Helper()

	items := []item{dirItem("/")}

	for d := range 40 {
		dp := fmt.Sprintf("/dir%02d", d)
		items = append(items, dirItem(dp))

		for f := range 100 {
			size := (d*100 + f) * 37 % 2048
			items = append(items, regItem(fmt.Sprintf("%s/file%03d", dp, f), strings.Repeat("x", size), f%10 == 0))
		}

		items = append(items, symItem(dp+"/zlink", "file000"))
	}

	data, err := writeGoNix(items)
	if err != nil {
		b.Fatal(err)
	}

	return data
}

func BenchmarkReader(b *testing.B) {
	data := benchNAR(b)
	buf := make([]byte, 32<<10)

	b.Run("ours", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()

		for b.Loop() {
			nr := NewReader(bytes.NewReader(data))

			for {
				_, err := nr.Next()
				if err == io.EOF {
					break
				}

				if err != nil {
					b.Fatal(err)
				}

				if _, err := io.CopyBuffer(io.Discard, nr, buf); err != nil {
					b.Fatal(err)
				}
			}
		}
	})

	b.Run("ours-skip-content", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()

		for b.Loop() {
			if _, err := Validate(bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("go-nix", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()

		for b.Loop() {
			nr, err := gonar.NewReader(bytes.NewReader(data))
			if err != nil {
				b.Fatal(err)
			}

			for {
				_, err := nr.Next()
				if err == io.EOF {
					break
				}

				if err != nil {
					b.Fatal(err)
				}

				if _, err := io.CopyBuffer(io.Discard, nr, buf); err != nil {
					b.Fatal(err)
				}
			}

			_ = nr.Close()
		}
	})
}
