package narinfo

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse checks that whatever Parse accepts is valid, formats, and
// parses back to the same value, and that Format writes exactly one line
// per field.
func FuzzParse(f *testing.F) {
	f.Add([]byte(nix28Example))
	f.Add([]byte(minimal))
	f.Add([]byte(minimal + "References: \nDeriver: unknown-deriver\nSystem: \nCA: \nX-New: value\n"))
	f.Add([]byte(strings.Replace(minimal, exampleNarHash, "sha256-"+exampleNarHashB64, 1) + "FileHash: sha256:" + exampleNarHashHex + "\nFileSize: 0\n"))
	f.Add([]byte("StorePath: /x/cl0ai7xw811mpinmj9bg20gvr0k8ibg7-.\nURL: :\nNarHash: " + exampleNarHash + "\nNarSize: 01\nSig: a:: \nA: : \n\n"))
	f.Add([]byte(strings.ReplaceAll(minimal, "\n", "\r\n")))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := Parse(bytes.NewReader(data))
		if err != nil {
			return
		}
		if err := n.Validate(); err != nil {
			t.Fatalf("Parse accepted %q but Validate fails: %v", data, err)
		}
		if _, err := n.Fingerprint(); err != nil {
			t.Fatalf("Parse accepted %q but Fingerprint fails: %v", data, err)
		}
		out, err := n.Format()
		if err != nil {
			t.Fatalf("Parse accepted %q but Format fails: %v", data, err)
		}
		checkLines(t, n, out)
		n2, err := Parse(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("Format output %q does not parse: %v", out, err)
		}
		if !reflect.DeepEqual(n, n2) {
			t.Fatalf("round trip changed the value:\n got %#v\nwant %#v", n2, n)
		}
		out2, err := n2.Format()
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("Format is not stable: %q, %v; want %q", out2, err, out)
		}
	})
}

// checkLines checks that out has exactly one line per field of n, each with
// the expected key.
func checkLines(t *testing.T, n *NarInfo, out []byte) {
	t.Helper()
	want := []string{keyStorePath, keyURL, keyCompression}
	if n.FileHash != "" {
		want = append(want, keyFileHash)
	}
	if n.FileHash != "" || n.FileSize != 0 {
		want = append(want, keyFileSize)
	}
	want = append(want, keyNarHash, keyNarSize, keyReferences)
	if n.Deriver != "" {
		want = append(want, keyDeriver)
	}
	if n.System != "" {
		want = append(want, keySystem)
	}
	for range n.Sigs {
		want = append(want, keySig)
	}
	if n.CA != "" {
		want = append(want, keyCA)
	}
	for _, f := range n.Extra {
		want = append(want, f.Key)
	}

	s, ok := strings.CutSuffix(string(out), "\n")
	if !ok {
		t.Fatalf("Format output %q does not end in a newline", out)
	}
	lines := strings.Split(s, "\n")
	if len(lines) != len(want) {
		t.Fatalf("Format wrote %d lines, want %d (%q):\n%s", len(lines), len(want), want, out)
	}
	for i, line := range lines {
		key, _, ok := strings.Cut(line, ": ")
		if !ok || key != want[i] || strings.ContainsRune(line, '\r') {
			t.Fatalf("Format line %d is %q, want key %q", i+1, line, want[i])
		}
	}
}
