// Command gcsynth writes a file:// binary cache of synthetic closures for
// bench/gc.sh and prints each closure's root, one a line: -closures
// closures of -paths store paths each (a root referring to the others),
// no path shared, each a one-file NAR, uncompressed.
//
//	go run ./bench/gcsynth -dir /tmp/cache -closures 100 -paths 100
package main

import (
	"bytes"
	"crypto/sha256"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"

	gonar "github.com/nix-community/go-nix/pkg/nar"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

func main() {
	dir := flag.String("dir", "", "cache directory to write")
	closures := flag.Int("closures", 100, "closures")
	paths := flag.Int("paths", 100, "store paths per closure")
	flag.Parse()
	if *dir == "" {
		log.Fatal("gcsynth: -dir is required")
	}
	if err := os.MkdirAll(filepath.Join(*dir, "nar"), 0o755); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(*dir, "nix-cache-info"), []byte(spec.CacheInfo("/nix/store", spec.DefaultPriority)), 0o644); err != nil {
		log.Fatal(err)
	}
	for c := range *closures {
		var refs []string
		for p := 1; p < *paths; p++ {
			refs = append(refs, add(*dir, fmt.Sprintf("gc-%d-leaf-%d", c, p), nil))
		}
		fmt.Println("/nix/store/" + add(*dir, fmt.Sprintf("gc-%d-root", c), refs))
	}
}

// add writes one store path named name with references refs (base
// names) and returns its base name.
func add(dir, name string, refs []string) string {
	sum := sha256.Sum256([]byte("store path " + name))
	base := nixbase32.EncodeToString(sum[:20]) + "-" + name
	var nar bytes.Buffer
	w, err := gonar.NewWriter(&nar)
	if err == nil {
		content := "synthetic " + name + "\n"
		err = w.WriteHeader(&gonar.Header{Path: "/", Type: gonar.TypeRegular, Size: int64(len(content))})
		if err == nil {
			_, err = w.Write([]byte(content))
		}
		if err == nil {
			err = w.Close()
		}
	}
	if err != nil {
		log.Fatal(err)
	}
	h := sha256.Sum256(nar.Bytes())
	hash := "sha256:" + nixbase32.EncodeToString(h[:])
	if refs == nil {
		refs = []string{}
	}
	info := &narinfo.NarInfo{
		StorePath: "/nix/store/" + base, URL: "nar/" + nixbase32.EncodeToString(h[:]) + ".nar", Compression: "none",
		FileHash: hash, FileSize: uint64(nar.Len()), NarHash: hash, NarSize: uint64(nar.Len()), References: refs,
	}
	text, err := info.Format()
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, info.URL), nar.Bytes(), 0o644); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, base[:32]+".narinfo"), text, 0o644); err != nil {
		log.Fatal(err)
	}
	return base
}
