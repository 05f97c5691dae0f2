package narinfo_test

import (
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/nixoci/nixoci/narinfo"
)

const example = `StorePath: /nix/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a
URL: nar/1prr0cy3xdcfc24i4wyzjgi9xrngc3ygil3zwrm2q1yk6pbbkgbn.nar.xz
Compression: xz
FileHash: sha256:1prr0cy3xdcfc24i4wyzjgi9xrngc3ygil3zwrm2q1yk6pbbkgbn
FileSize: 292
NarHash: sha256:1gfqn9ffzch123l95qr52w84km7q2qs00vjsqhr2qac5vnyzb8iy
NarSize: 616
References: 815rmnjvs2y7wkiqzyz3xaxaldh7sb7s-fx-busybox dc7cd44vbv9zcm8ssgc3l5xqhizicrxk-fx-data-a
Deriver: ijabbqbc9khnzxnq8z2g1pkxzgijswvl-fx-app-a.drv
`

func ExampleParse() {
	n, err := narinfo.Parse(strings.NewReader(example))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(n.HashPart())
	fmt.Println(n.NarSize, n.References)
	digest, err := narinfo.HashDigestHex(n.NarHash)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(digest)
	// Output:
	// cl0ai7xw811mpinmj9bg20gvr0k8ibg7
	// 616 [815rmnjvs2y7wkiqzyz3xaxaldh7sb7s-fx-busybox dc7cd44vbv9zcm8ssgc3l5xqhizicrxk-fx-data-a]
	// 3ea2f5bddd85292c32c45a6e003416f8d449101725e392e81001b2ef5cb2d8bd
}

func ExampleNarInfo_AddSignature() {
	// A key as written by nix-store --generate-binary-cache-key; in real use,
	// LoadSecretKey reads it from a file.
	key, err := narinfo.ParseSecretKey("example-1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8DoQe/884Qvh1w3RjnS8CZZ+TWMJulDV8d3IZkElUxuA==")
	if err != nil {
		log.Fatal(err)
	}
	n := &narinfo.NarInfo{
		StorePath:   narinfo.DefaultStoreDir + "/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a",
		URL:         "nar/1gfqn9ffzch123l95qr52w84km7q2qs00vjsqhr2qac5vnyzb8iy.nar",
		Compression: "none",
		NarHash:     "sha256-PqL1vd2FKSwyxFpuADQW+NRJEBcl45LoEAGy71yy2L0=", // normalised by Format
		NarSize:     616,
		References:  []string{"dc7cd44vbv9zcm8ssgc3l5xqhizicrxk-fx-data-a", "815rmnjvs2y7wkiqzyz3xaxaldh7sb7s-fx-busybox"},
	}
	fp, err := n.Fingerprint()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(fp)
	if err := n.AddSignature(key); err != nil {
		log.Fatal(err)
	}
	if _, err := n.WriteTo(os.Stdout); err != nil {
		log.Fatal(err)
	}

	trusted, err := narinfo.ParsePublicKey("example-1:A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("verified:", trusted.Verify(n))
	// Output:
	// 1;/nix/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a;sha256:1gfqn9ffzch123l95qr52w84km7q2qs00vjsqhr2qac5vnyzb8iy;616;/nix/store/815rmnjvs2y7wkiqzyz3xaxaldh7sb7s-fx-busybox,/nix/store/dc7cd44vbv9zcm8ssgc3l5xqhizicrxk-fx-data-a
	// StorePath: /nix/store/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-fx-app-a
	// URL: nar/1gfqn9ffzch123l95qr52w84km7q2qs00vjsqhr2qac5vnyzb8iy.nar
	// Compression: none
	// NarHash: sha256:1gfqn9ffzch123l95qr52w84km7q2qs00vjsqhr2qac5vnyzb8iy
	// NarSize: 616
	// References: dc7cd44vbv9zcm8ssgc3l5xqhizicrxk-fx-data-a 815rmnjvs2y7wkiqzyz3xaxaldh7sb7s-fx-busybox
	// Sig: example-1:mXghhJq7ilk7dvXD5hsXIa0UHmU5bVFkPwckNxQaqp+m+WVR2oi6swcszPtxKlnmWviVzACdVWet7QpU8LYQDw==
	// verified: true
}
