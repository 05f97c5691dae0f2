package spec_test

import (
	"fmt"

	"github.com/nixoci/nixoci/spec"
)

func ExampleDefaultClosureTag() {
	for _, root := range []string{
		"/nix/store/wmax4jpcbcyvaqcx04skyir4x9j40ygh-fx-app",
		"/nix/store/0c7c96gikmzv87i7lv3vq5s1cmfjd6zf-hello-2.12",
		"/nix/store/0c7c96gikmzv87i7lv3vq5s1cmfjd6zf-python3.11-requests+socks",
		"/nix/store/0c7c96gikmzv87i7lv3vq5s1cmfjd6zf-.dotfile",
		"/nix/store/0c7c96gikmzv87i7lv3vq5s1cmfjd6zf",
	} {
		tag, err := spec.DefaultClosureTag(root)
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		fmt.Println(tag, spec.ValidTag(tag))
	}
	// Output:
	// fx-app true
	// hello-2.12 true
	// python3.11-requests_socks true
	// _.dotfile true
	// error: cannot derive a tag from "/nix/store/0c7c96gikmzv87i7lv3vq5s1cmfjd6zf": not a store path
}

func ExamplePathTag() {
	fmt.Println(spec.PathTag("/nix/store/wmax4jpcbcyvaqcx04skyir4x9j40ygh-fx-app"))
	// Output: wmax4jpcbcyvaqcx04skyir4x9j40ygh
}

func ExampleNarURL() {
	fmt.Println(spec.NarURL("1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s", spec.CompressionZstd))
	fmt.Println(spec.CompressionZstd.MediaType())
	// Output:
	// nar/1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s.nar.zst
	// application/vnd.nixoci.nar.v1+zstd
}
