package artifact_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// pathInfo is a consistent synthetic narinfo for name, compressed with c.
func pathInfo(name string, c spec.Compression) *narinfo.NarInfo {
	file := []byte("file of " + name)
	return &narinfo.NarInfo{
		StorePath:   storePath(name),
		URL:         spec.NarURL(nix32(file), c),
		Compression: string(c),
		FileHash:    "sha256:" + nix32(file),
		FileSize:    uint64(len(file)),
		NarHash:     "sha256:" + nix32([]byte("nar of "+name)),
		NarSize:     4242,
		References:  []string{},
	}
}

func fullInfo() *narinfo.NarInfo {
	info := pathInfo("hello-2.12", spec.CompressionXz)
	info.References = []string{baseName("glibc-2.40"), baseName("hello-2.12")}
	slices.Sort(info.References)
	info.Deriver = baseName("hello-2.12.drv")
	info.System = "x86_64-linux"
	info.CA = "fixed:r:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
	if err := info.AddSignature(testKey("cache.example-1")); err != nil {
		panic(err)
	}
	info.Sigs = append(info.Sigs, "other.example-1:c2lnbmF0dXJl")
	return info
}

func TestPathArtifactRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		info *narinfo.NarInfo
		want map[string]string // annotations beyond the always-present ones
	}{
		{"minimal zstd", pathInfo("data", spec.CompressionZstd), nil},
		{"none", pathInfo("raw", spec.CompressionNone), nil},
		{"full xz", fullInfo(), map[string]string{
			spec.AnnotationDeriver: fullInfo().Deriver,
			spec.AnnotationSystem:  "x86_64-linux",
			spec.AnnotationCA:      fullInfo().CA,
			spec.AnnotationSigs:    strings.Join(fullInfo().Sigs, " "),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := tt.info
			art, manifest, niData, err := artifact.NewPathArtifact(info)
			if err != nil {
				t.Fatal(err)
			}
			formatted, _ := info.Format()
			if !bytes.Equal(niData, formatted) {
				t.Errorf("narinfo blob:\n%s\nwant info.Format():\n%s", niData, formatted)
			}
			if !reflect.DeepEqual(art.Info, info) {
				t.Errorf("PathArtifact.Info = %+v, want the given (already normal) narinfo %+v", art.Info, info)
			}
			wantMD := ocispec.Descriptor{
				MediaType:    ocispec.MediaTypeImageManifest,
				ArtifactType: spec.ArtifactTypePath,
				Digest:       digest.FromBytes(manifest),
				Size:         int64(len(manifest)),
			}
			if !reflect.DeepEqual(art.Manifest, wantMD) {
				t.Errorf("Manifest descriptor = %+v, want %+v", art.Manifest, wantMD)
			}

			// The manifest as SPEC.md section 4 describes it.
			var m ocispec.Manifest
			if err := json.Unmarshal(manifest, &m); err != nil {
				t.Fatal(err)
			}
			if m.SchemaVersion != 2 || m.MediaType != ocispec.MediaTypeImageManifest || m.ArtifactType != spec.ArtifactTypePath {
				t.Errorf("manifest header: schemaVersion %d, mediaType %q, artifactType %q", m.SchemaVersion, m.MediaType, m.ArtifactType)
			}
			wantConfig := ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON, Digest: ocispec.DescriptorEmptyJSON.Digest, Size: 2}
			if !reflect.DeepEqual(m.Config, wantConfig) {
				t.Errorf("config = %+v, want %+v (no inline data)", m.Config, wantConfig)
			}
			c := spec.Compression(info.Compression)
			fileHex, _ := narinfo.HashDigestHex(info.FileHash)
			wantNAR := ocispec.Descriptor{
				MediaType:   c.MediaType(),
				Digest:      digest.NewDigestFromEncoded(digest.SHA256, fileHex),
				Size:        int64(info.FileSize),
				Annotations: map[string]string{spec.AnnotationTitle: info.URL},
			}
			wantNI := ocispec.Descriptor{
				MediaType:   spec.MediaTypeNarInfo,
				Digest:      digest.FromBytes(niData),
				Size:        int64(len(niData)),
				Annotations: map[string]string{spec.AnnotationTitle: info.HashPart() + ".narinfo"},
			}
			if !reflect.DeepEqual(m.Layers, []ocispec.Descriptor{wantNAR, wantNI}) {
				t.Errorf("layers = %+v,\nwant %+v", m.Layers, []ocispec.Descriptor{wantNAR, wantNI})
			}
			if !reflect.DeepEqual(art.NAR, wantNAR) || !reflect.DeepEqual(art.NarInfo, wantNI) {
				t.Errorf("PathArtifact descriptors %+v %+v, want %+v %+v", art.NAR, art.NarInfo, wantNAR, wantNI)
			}
			wantAnn := map[string]string{
				spec.AnnotationVersion:    "1",
				spec.AnnotationStorePath:  info.StorePath,
				spec.AnnotationNarHash:    info.NarHash,
				spec.AnnotationNarSize:    "4242",
				spec.AnnotationReferences: strings.Join(info.References, " "),
			}
			maps.Copy(wantAnn, tt.want)
			if !maps.Equal(m.Annotations, wantAnn) {
				t.Errorf("annotations = %v,\nwant %v", m.Annotations, wantAnn)
			}
			if bytes.Contains(manifest, []byte("created")) || bytes.Contains(manifest, []byte("\n")) {
				t.Errorf("manifest has a timestamp or whitespace: %s", manifest)
			}

			// Read back from the manifest alone.
			parsed, err := artifact.ParsePathManifest(ocispec.Descriptor{Digest: art.Manifest.Digest, Size: art.Manifest.Size}, manifest)
			if err != nil {
				t.Fatal(err)
			}
			rendered, err := parsed.Info.Format()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(rendered, niData) {
				t.Errorf("narinfo rendered from the manifest:\n%s\nwant the narinfo blob:\n%s", rendered, niData)
			}
			if !reflect.DeepEqual(parsed.NAR, art.NAR) || !reflect.DeepEqual(parsed.NarInfo, art.NarInfo) {
				t.Errorf("parsed descriptors %+v %+v, want %+v %+v", parsed.NAR, parsed.NarInfo, art.NAR, art.NarInfo)
			}
			if !reflect.DeepEqual(parsed.Manifest, wantMD) {
				t.Errorf("parsed Manifest = %+v, want %+v", parsed.Manifest, wantMD)
			}
			if !slices.Equal(parsed.Info.Sigs, info.Sigs) || parsed.Info.CA != info.CA || parsed.Info.Deriver != info.Deriver {
				t.Errorf("parsed narinfo %+v, want %+v", parsed.Info, info)
			}
		})
	}
}

// editManifest returns the manifest of pathInfo("edit") after edit
// changes its JSON object.
func editManifest(t *testing.T, edit func(m map[string]any)) (ocispec.Descriptor, []byte) {
	t.Helper()
	art, data, _, err := artifact.NewPathArtifact(pathInfo("edit", spec.CompressionZstd))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return ocispec.Descriptor{MediaType: art.Manifest.MediaType, Digest: digest.FromBytes(out), Size: int64(len(out))}, out
}

func annotations(m map[string]any) map[string]any { return m["annotations"].(map[string]any) }
func layers(m map[string]any) []any               { return m["layers"].([]any) }
func layer(m map[string]any, i int) map[string]any {
	return layers(m)[i].(map[string]any)
}

// Edits that make a manifest something other than a nixoci path artifact
// of this version: ParsePathManifest must say so with ErrNotArtifact.
var notArtifactEdits = []struct {
	name string
	edit func(m map[string]any)
}{
	{"wrong artifactType", func(m map[string]any) { m["artifactType"] = spec.ArtifactTypeClosure }},
	{"no artifactType", func(m map[string]any) { delete(m, "artifactType") }},
	{"no version", func(m map[string]any) { delete(annotations(m), spec.AnnotationVersion) }},
	{"version 2", func(m map[string]any) { annotations(m)[spec.AnnotationVersion] = "2" }},
	{"no annotations", func(m map[string]any) { delete(m, "annotations") }},
	{"no layers", func(m map[string]any) { m["layers"] = []any{} }},
	{"only the NAR layer", func(m map[string]any) { m["layers"] = layers(m)[:1] }},
	{"only the narinfo layer", func(m map[string]any) { m["layers"] = layers(m)[1:] }},
	{"NAR title not its digest", func(m map[string]any) {
		layer(m, 0)["annotations"] = map[string]any{spec.AnnotationTitle: "nar/" + strings.Repeat("0", 52) + ".nar.zst"}
	}},
	{"NAR title with another extension", func(m map[string]any) {
		a := layer(m, 0)["annotations"].(map[string]any)
		a[spec.AnnotationTitle] = strings.TrimSuffix(a[spec.AnnotationTitle].(string), ".zst") + ".xz"
	}},
	{"NAR media type not matching title", func(m map[string]any) { layer(m, 0)["mediaType"] = spec.MediaTypeNARXz }},
}

// Edits that leave a nixoci path manifest with an invalid annotation.
var invalidAnnotationEdits = []struct {
	name string
	edit func(m map[string]any)
}{
	{"nar-size not a number", func(m map[string]any) { annotations(m)[spec.AnnotationNarSize] = "12x" }},
	{"nar-size missing", func(m map[string]any) { delete(annotations(m), spec.AnnotationNarSize) }},
	{"nar-size zero", func(m map[string]any) { annotations(m)[spec.AnnotationNarSize] = "0" }},
	{"store-path missing", func(m map[string]any) { delete(annotations(m), spec.AnnotationStorePath) }},
	{"store-path not a store path", func(m map[string]any) { annotations(m)[spec.AnnotationStorePath] = "/usr/bin/hello" }},
	{"nar-hash md5", func(m map[string]any) {
		annotations(m)[spec.AnnotationNarHash] = "md5:0123456789abcdef0123456789abcdef"
	}},
	{"nar-hash garbage", func(m map[string]any) { annotations(m)[spec.AnnotationNarHash] = "sha256:xyz" }},
	{"reference not a base name", func(m map[string]any) { annotations(m)[spec.AnnotationReferences] = "glibc" }},
	{"signature without key name", func(m map[string]any) { annotations(m)[spec.AnnotationSigs] = "nokeyname" }},
	{"NAR without title", func(m map[string]any) { delete(layer(m, 0), "annotations") }},
	{"deriver not a base name", func(m map[string]any) { annotations(m)[spec.AnnotationDeriver] = "x.drv" }},
}

func TestParsePathManifestRejects(t *testing.T) {
	for _, tt := range notArtifactEdits {
		t.Run(tt.name, func(t *testing.T) {
			desc, data := editManifest(t, tt.edit)
			got, err := artifact.ParsePathManifest(desc, data)
			if !errors.Is(err, artifact.ErrNotArtifact) {
				t.Fatalf("ParsePathManifest = %+v, %v; want an error wrapping ErrNotArtifact", got.Info, err)
			}
			if !strings.Contains(err.Error(), desc.Digest.String()) {
				t.Errorf("error %q does not name the manifest", err)
			}
		})
	}
	for _, tt := range invalidAnnotationEdits {
		t.Run(tt.name, func(t *testing.T) {
			desc, data := editManifest(t, tt.edit)
			got, err := artifact.ParsePathManifest(desc, data)
			if err == nil {
				t.Fatalf("ParsePathManifest accepted it: %+v", got.Info)
			}
			if !strings.Contains(err.Error(), desc.Digest.String()) {
				t.Errorf("error %q does not name the manifest", err)
			}
		})
	}
	for _, data := range []string{"", "not json", "[]", `{"layers":"x"}`} {
		if _, err := artifact.ParsePathManifest(ocispec.Descriptor{Digest: digest.FromString(data)}, []byte(data)); err == nil {
			t.Errorf("ParsePathManifest(%q) succeeded", data)
		}
	}
	// The unedited manifest parses: the edits above are what is rejected.
	desc, data := editManifest(t, func(map[string]any) {})
	if _, err := artifact.ParsePathManifest(desc, data); err != nil {
		t.Fatalf("unedited manifest: %v", err)
	}
}

// TestParsePathManifestInvalidAnnotationsNotArtifact: a manifest whose
// nixoci annotations are invalid is not one nixoci wrote, which is what
// ErrNotArtifact means; callers cannot tell these errors from I/O errors.
func TestParsePathManifestInvalidAnnotationsNotArtifact(t *testing.T) {
	for _, tt := range invalidAnnotationEdits {
		desc, data := editManifest(t, tt.edit)
		if _, err := artifact.ParsePathManifest(desc, data); !errors.Is(err, artifact.ErrNotArtifact) {
			t.Errorf("%s: error = %v, want ErrNotArtifact", tt.name, err)
		}
	}
}

func TestNewPathArtifactRejectsInvalid(t *testing.T) {
	tests := []struct {
		name string
		edit func(*narinfo.NarInfo)
	}{
		{"unknown compression", func(n *narinfo.NarInfo) { n.Compression = "lz4" }},
		{"bzip2", func(n *narinfo.NarInfo) { n.Compression = "bzip2" }},
		{"no FileHash", func(n *narinfo.NarInfo) { n.FileHash = "" }},
		{"bad store path", func(n *narinfo.NarInfo) { n.StorePath = "/nix/store/short" }},
		{"no NarHash", func(n *narinfo.NarInfo) { n.NarHash = "" }},
		{"newline in System", func(n *narinfo.NarInfo) { n.System = "x86_64-linux\nSig: forged" }},
	}
	for _, tt := range tests {
		info := pathInfo("bad", spec.CompressionZstd)
		tt.edit(info)
		if _, _, _, err := artifact.NewPathArtifact(info); err == nil {
			t.Errorf("%s: NewPathArtifact succeeded", tt.name)
		}
	}
}

// TestNewPathArtifactNormalises: NarInfo accepts any hash encoding and
// reference order (its Format normalises hashes), but the annotations must
// hold what SPEC.md section 3 says ("sha256:<nix-base32>", references
// sorted) and a narinfo rendered from them must equal the narinfo blob.
func TestNewPathArtifactNormalises(t *testing.T) {
	info := pathInfo("norm", spec.CompressionZstd)
	nix32Hash := info.NarHash
	hexHash, _ := narinfo.HashDigestHex(nix32Hash)
	info.NarHash = "sha256:" + hexHash
	info.References = []string{baseName("zzz"), baseName("aaa")}
	slices.SortFunc(info.References, func(a, b string) int { return strings.Compare(b, a) }) // reverse order

	art, manifest, niData, err := artifact.NewPathArtifact(info)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(manifest, &m); err != nil {
		t.Fatal(err)
	}
	if got := m.Annotations[spec.AnnotationNarHash]; got != nix32Hash {
		t.Errorf("nar-hash annotation = %q, want %q", got, nix32Hash)
	}
	parsed, err := artifact.ParsePathManifest(art.Manifest, manifest)
	if err != nil {
		t.Fatal(err)
	}
	rendered, _ := parsed.Info.Format()
	if !bytes.Equal(rendered, niData) {
		t.Errorf("narinfo rendered from the manifest:\n%s\ndiffers from the narinfo blob:\n%s", rendered, niData)
	}
}
