package spec_test

import (
	"strings"
	"testing"

	"github.com/nixoci/nixoci/spec"
)

func TestClassifyTag(t *testing.T) {
	hash := "wmax4jpcbcyvaqcx04skyir4x9j40ygh"
	for tag, want := range map[string]spec.TagKind{
		"hello":          spec.TagNamed,
		"hello-2.12":     spec.TagNamed,
		"latest":         spec.TagNamed,
		"ci-42":          spec.TagNamed,
		hash:             spec.TagPath,
		"nixoci-gc":      spec.TagGC,
		"nixoci-gc-mark": spec.TagGC,
		"sha256-" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef": spec.TagReferrers,
		hash + ".layer.gzip": spec.TagLayer,
		hash + ".layer.zstd": spec.TagLayer,
		"group.0123456789abcdef0123456789abcdef01234567.gzip": spec.TagLayer,
		"compose.0123456789abcdef0123456789abcdef01234567":    spec.TagCompose,
		hash + ".log": spec.TagFile,
		hash + ".ls":  spec.TagFile,
		"debuginfo.0123456789abcdef0123456789abcdef01234567":                           spec.TagFile,
		"realisation.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef": spec.TagFile,
		// Tags a user may choose that only look like ours.
		"WMAX4JPCBCYVAQCX04SKYIR4X9J40YGH": spec.TagNamed, // not nix-base32
		"emax4jpcbcyvaqcx04skyir4x9j40ygh": spec.TagNamed, // 'e' is not in the alphabet
		"wmax4jpcbcyvaqcx04skyir4x9j40yg":  spec.TagNamed, // 31 characters
		"sha256-0123abcd":                  spec.TagNamed,
		"release.layer.1":                  spec.TagNamed,
		"group.1":                          spec.TagNamed,
		"compose.mine":                     spec.TagNamed,
		"nixoci-gc-2":                      spec.TagNamed,
		hash + ".layer.gzip.old":           spec.TagNamed,
	} {
		if got := spec.ClassifyTag(tag); got != want {
			t.Errorf("ClassifyTag(%q) = %v, want %v", tag, got, want)
		}
	}
}

// TestClassifyTagsNixociWrites: every tag nixoci gives its own
// artifacts is classified as what it is.
func TestClassifyTagsNixociWrites(t *testing.T) {
	hashes := []string{"wmax4jpcbcyvaqcx04skyir4x9j40ygh", "0123456789abcdfghijklmnpqrsvwxyz"}
	for _, c := range []spec.LayerCompression{spec.LayerGzip, spec.LayerZstd} {
		for _, tag := range []string{spec.LayerTag(hashes[:1], c), spec.LayerTag(hashes, c)} {
			if got := spec.ClassifyTag(tag); got != spec.TagLayer {
				t.Errorf("ClassifyTag(%q) = %v, want TagLayer", tag, got)
			}
		}
	}
	if got := spec.ClassifyTag(spec.PathTag("/nix/store/" + hashes[1] + "-x")); got != spec.TagPath {
		t.Errorf("a path tag is %v", got)
	}
}

// TestRecordInstance: host names become instance names that make valid
// record tags, which are closure tags for readers (TagNamed).
func TestRecordInstance(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"ci-runner-7", "ci-runner-7"},
		{"CI Runner/7", "ci-runner-7"},
		{"node1.example.com", "node1-example-com"},
		{"--x__y--", "x-y"},
		{"", "serve"},
		{"...", "serve"},
		{strings.Repeat("a", 100), strings.Repeat("a", 64)},
		{strings.Repeat("a", 63) + ".b", strings.Repeat("a", 63)},
	} {
		got := spec.RecordInstance(tc.in)
		if got != tc.want || !spec.ValidInstance(got) {
			t.Errorf("RecordInstance(%q) = %q (valid %v), want %q", tc.in, got, spec.ValidInstance(got), tc.want)
		}
		tag := spec.RecordTag(spec.RecordUploaded, "2026-12-31", got, 999)
		if !spec.ValidTag(tag) || spec.ClassifyTag(tag) != spec.TagNamed {
			t.Errorf("record tag %q: valid %v, kind %v", tag, spec.ValidTag(tag), spec.ClassifyTag(tag))
		}
	}
	if spec.ValidInstance("Upper") || spec.ValidInstance("a.b") || spec.ValidInstance("-a") {
		t.Errorf("ValidInstance takes names RecordInstance would change")
	}
}
