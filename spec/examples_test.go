package spec_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/internal/fixture"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/realisation"
	"github.com/nixoci/nixoci/spec"
)

var update = flag.Bool("update", false, "rewrite examples/ from what the code produces")

// examplePath packs a one-file store path the way push does, with a
// signature from a fixed key, so the examples are fully determined.
func examplePath(t *testing.T, name, content string, refs []string) artifact.PathArtifact {
	t.Helper()
	n := fixture.FileNAR(t, content)
	z := fixture.Compress(t, n, spec.CompressionZstd)
	fileHash := fixture.Nix32(z)
	pathSum := sha256.Sum256([]byte(name))
	info := &narinfo.NarInfo{
		StorePath:   "/nix/store/" + nixbase32.EncodeToString(pathSum[:20]) + "-" + name,
		URL:         spec.NarURL(fileHash, spec.CompressionZstd),
		Compression: string(spec.CompressionZstd),
		FileHash:    "sha256:" + fileHash,
		FileSize:    uint64(len(z)),
		NarHash:     "sha256:" + fixture.Nix32(n),
		NarSize:     uint64(len(n)),
		References:  refs,
		Deriver:     nixbase32.EncodeToString(pathSum[:20]) + "-" + name + ".drv",
	}
	seed := sha256.Sum256([]byte("nixoci example key"))
	key := narinfo.SecretKey{Name: "example-1", Key: ed25519.NewKeyFromSeed(seed[:])}
	if err := info.AddSignature(key); err != nil {
		t.Fatal(err)
	}
	art, _, _, err := artifact.NewPathArtifact(info)
	if err != nil {
		t.Fatal(err)
	}
	return art
}

// checkExample compares produced bytes with examples/name. JSON examples
// are stored indented for reading; compacted they must equal the code's
// output byte for byte.
func checkExample(t *testing.T, name string, produced []byte) {
	t.Helper()
	path := filepath.Join("examples", name)
	stored := produced
	if filepath.Ext(name) == ".json" {
		var b bytes.Buffer
		if err := json.Indent(&b, produced, "", "  "); err != nil {
			t.Fatal(err)
		}
		b.WriteByte('\n')
		stored = b.Bytes()
	}
	if *update {
		if err := os.WriteFile(path, stored, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./spec -update to create it)", err)
	}
	if filepath.Ext(name) == ".json" {
		var b bytes.Buffer
		if err := json.Compact(&b, want); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		want = b.Bytes()
	}
	if !bytes.Equal(want, produced) {
		t.Errorf("%s differs from what the code produces:\n got: %s\nwant: %s", path, produced, want)
	}
}

func TestExamples(t *testing.T) {
	data := examplePath(t, "greeting", "hello\n", nil)
	app := examplePath(t, "app", "#!/bin/sh\ncat "+data.Info.StorePath+"\n", []string{filepath.Base(data.Info.StorePath)})

	_, manifest, narinfoText, err := artifact.NewPathArtifact(app.Info)
	if err != nil {
		t.Fatal(err)
	}
	checkExample(t, "path-manifest.json", manifest)
	checkExample(t, "path.narinfo", narinfoText)

	cm, err := artifact.NewClosureManifests([]string{app.Info.StorePath}, []artifact.PathArtifact{app, data}, "/nix/store", 0)
	if err != nil {
		t.Fatal(err)
	}
	checkExample(t, "closure-manifest.json", cm.Top.Data)

	// The same closure with a manifest limit small enough to split it.
	split, err := artifact.NewClosureManifests([]string{app.Info.StorePath}, []artifact.PathArtifact{app, data}, "/nix/store", 1400)
	if err != nil {
		t.Fatal(err)
	}
	if len(split.Parts) != 2 {
		t.Fatalf("split into %d parts, want 2", len(split.Parts))
	}
	checkExample(t, "closure-index.json", split.Top.Data)
	checkExample(t, "closure-part-1.json", split.Parts[0].Data)
	checkExample(t, "closure-part-2.json", split.Parts[1].Data)

	// Version 2: an index of the path manifests, whole and split.
	ci, err := artifact.NewClosureIndex([]string{app.Info.StorePath}, []artifact.PathArtifact{app, data}, "/nix/store", 0)
	if err != nil {
		t.Fatal(err)
	}
	checkExample(t, "closure-v2-index.json", ci.Top.Data)
	checkExample(t, "closure-v2-cache-info.json", ci.CacheInfoManifest.Data)
	splitV2, err := artifact.NewClosureIndex([]string{app.Info.StorePath}, []artifact.PathArtifact{app, data}, "/nix/store", 2000)
	if err != nil {
		t.Fatal(err)
	}
	if len(splitV2.Parts) != 2 {
		t.Fatalf("v2 split into %d parts, want 2", len(splitV2.Parts))
	}
	checkExample(t, "closure-v2-split-index.json", splitV2.Top.Data)
	checkExample(t, "closure-v2-part-1.json", splitV2.Parts[0].Data)
	checkExample(t, "closure-v2-part-2.json", splitV2.Parts[1].Data)

	// Section 12: the realisation of app (both keys), and the closure
	// listing it (12.6).
	hk, err := realisation.ParseHashKey("sha256:" + strings.Repeat("5e", 32) + "!out")
	if err != nil {
		t.Fatal(err)
	}
	pk, err := realisation.NewPathKey(app.Info.Deriver, "out")
	if err != nil {
		t.Fatal(err)
	}
	outBase := filepath.Base(app.Info.StorePath)
	rl := &artifact.Realisation{OutPath: app.Info.StorePath, Output: "out",
		HashKey: &hk, V1: &realisation.V1{Key: hk, OutPath: outBase, Dependent: map[string]string{}},
		PathKey: &pk, V2: &realisation.V2{OutPath: outBase}}
	rfa, err := rl.Artifact()
	if err != nil {
		t.Fatal(err)
	}
	rdata, err := rfa.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	checkExample(t, "realisation-manifest.json", rdata)
	cf, err := artifact.NewClosureIndexWithFiles([]string{app.Info.StorePath}, []artifact.PathArtifact{app, data},
		[]artifact.ClosureFile{{StorePath: app.Info.StorePath, Artifact: rfa}}, "/nix/store", 0)
	if err != nil {
		t.Fatal(err)
	}
	checkExample(t, "closure-files-index.json", cf.Top.Data)
	if cf.CacheInfoManifest.Descriptor.Digest != ci.CacheInfoManifest.Descriptor.Digest {
		t.Error("the cache-info manifest of a closure with files differs")
	}

	// Section 10: a push record of the closure, a running and a finished
	// gc marker, at fixed times.
	at := time.Date(2026, 12, 1, 22, 33, 46, 123456789, time.UTC)
	rec, err := artifact.NewPushRecord(ci.Top.Descriptor, "app", at, artifact.RecordOptions{Tool: "nixoci/1.2.0"})
	if err != nil {
		t.Fatal(err)
	}
	checkExample(t, "push-record.json", rec.Data)
	running, err := artifact.NewGCMarker(at, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	checkExample(t, "gc-marker-running.json", running.Data)
	finished, err := artifact.NewGCMarker(at, at.Add(90*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	checkExample(t, "gc-marker-finished.json", finished.Data)
	// A mark record: the closure and its private path found unreachable
	// half an hour before this mark, the push record by this mark.
	record, recordManifest, err := artifact.NewMarkRecord(artifact.MarkRecord{Marked: at, Unreachable: []artifact.MarkEntry{
		{Kind: "closure", Digest: ci.Top.Descriptor.Digest, Tags: []string{"app"}, Since: at.Add(-30 * time.Minute)},
		{Kind: "path", Digest: app.Manifest.Digest, Tags: []string{spec.PathTag(app.Info.StorePath)}, StorePath: app.Info.StorePath, Since: at.Add(-30 * time.Minute)},
		{Kind: "push-record", Digest: rec.Descriptor.Digest, Since: at},
	}})
	if err != nil {
		t.Fatal(err)
	}
	checkExample(t, "gc-mark-record.json", record.Data)
	checkExample(t, "gc-mark.json", recordManifest.Data)

	// What a substituter renders from the manifest alone is the narinfo.
	parsed, err := artifact.ParsePathManifest(app.Manifest, manifest)
	if err != nil {
		t.Fatal(err)
	}
	rendered, err := parsed.Info.Format()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rendered, narinfoText) {
		t.Errorf("narinfo rendered from the manifest differs from the narinfo blob:\n%s\nvs\n%s", rendered, narinfoText)
	}
}

func TestIsHashPart(t *testing.T) {
	for s, want := range map[string]bool{
		"wmax4jpcbcyvaqcx04skyir4x9j40ygh":  true,
		"0123456789abcdfghijklmnpqrsvwxyz":  true,
		"wmax4jpcbcyvaqcx04skyir4x9j40yge":  false, // e
		"wmax4jpcbcyvaqcx04skyir4x9j40ygt":  false, // t
		"WMAX4JPCBCYVAQCX04SKYIR4X9J40YGH":  false,
		"wmax4jpcbcyvaqcx04skyir4x9j40yg":   false,
		"wmax4jpcbcyvaqcx04skyir4x9j40yghh": false,
		"":                                  false,
	} {
		if got := spec.IsHashPart(s); got != want {
			t.Errorf("IsHashPart(%q) = %v, want %v", s, got, want)
		}
	}
}
