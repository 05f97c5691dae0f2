package substituter_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/nixoci/nixoci/substituter"
)

// testHtpasswd is an htpasswd file for user, password pairs, hashed with
// bcrypt at its lowest cost (the format, not the cost, is under test).
func testHtpasswd(t testing.TB, userPasswords ...string) string {
	t.Helper()
	var b strings.Builder
	for i := 0; i+1 < len(userPasswords); i += 2 {
		hash, err := bcrypt.GenerateFromPassword([]byte(userPasswords[i+1]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:%s\n", userPasswords[i], hash)
	}
	return b.String()
}

// testCredentials are the credentials of testHtpasswd.
func testCredentials(t testing.TB, userPasswords ...string) *substituter.Credentials {
	t.Helper()
	c, err := substituter.ParseCredentials(strings.NewReader(testHtpasswd(t, userPasswords...)), "test")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// htpasswdAlice is what `htpasswd -nbB alice secret-pw-1` printed: $2y$,
// cost 5.
const htpasswdAlice = "alice:$2y$05$Ju80PaC5vHPK24niNgpZc.3aDlpQj8Mqoe4oKz8PPf.lYoh13fyLi"

func TestParseCredentials(t *testing.T) {
	_, aliceHash, _ := strings.Cut(htpasswdAlice, ":")
	bob := testHtpasswd(t, "bob", "bobs-pw")
	for _, tc := range []struct {
		name    string
		content string
		good    map[string]string // user: password that must verify
		wantErr error             // nil: any error when good is nil
		line    int               // the line the error must name
	}{
		{"htpasswd -B", htpasswdAlice + "\n", map[string]string{"alice": "secret-pw-1"}, nil, 0},
		{"$2a$ and $2b$", "a:" + strings.Replace(aliceHash, "$2y$", "$2a$", 1) + "\nb:" + strings.Replace(aliceHash, "$2y$", "$2b$", 1),
			map[string]string{"a": "secret-pw-1", "b": "secret-pw-1"}, nil, 0},
		{"comments, blanks, CRLF, no final newline", "# uploaders\n\n" + htpasswdAlice + "\r\n  # indented\n\t" + strings.TrimSpace(bob),
			map[string]string{"alice": "secret-pw-1", "bob": "bobs-pw"}, nil, 0},
		{"empty", "", nil, substituter.ErrNoCredentials, 0},
		{"only comments", "# nobody\n\n", nil, substituter.ErrNoCredentials, 0},
		{"plaintext", htpasswdAlice + "\ncarol:hunter2-plain\n", nil, substituter.ErrPlaintextPassword, 2},
		{"{PLAIN}", "carol:{PLAIN}hunter2-plain\n", nil, substituter.ErrPlaintextPassword, 1},
		{"crypt DES (htpasswd -d)", "# x\ncarol:hunter2hnt2a\n", nil, substituter.ErrPlaintextPassword, 2},
		{"$apr1$ (htpasswd -m)", "carol:$apr1$hunter2$iCZET4fvorG5rS5reTBnd0\n", nil, substituter.ErrUnsupportedHash, 1},
		{"{SHA} (htpasswd -s)", bob + "carol:{SHA}hunter2GpHWL3ymc5liWkNopqtdSjuq=\n", nil, substituter.ErrUnsupportedHash, 2},
		{"$5$ (htpasswd -2)", "carol:$5$hunter2XJzS7f/WVXuZ$irLJDpzfTblHG.6Utk54o1o21JhMVuRPyHXOQZB2pY6\n", nil, substituter.ErrUnsupportedHash, 1},
		{"$6$ (htpasswd -5)", "carol:$6$hunter2XmaSQqqFzE$U0ZVRNVvQTd6smnUVs67iivpVzSSWBmEoqAlufXeRw69\n", nil, substituter.ErrUnsupportedHash, 1},
		{"unknown scheme", "carol:$9$hunter2\n", nil, substituter.ErrUnsupportedHash, 1},
		{"truncated bcrypt", "carol:" + aliceHash[:50] + "\n", nil, substituter.ErrUnsupportedHash, 1},
		{"bcrypt with trailing junk", "carol:" + aliceHash + "hunter2\n", nil, substituter.ErrUnsupportedHash, 1},
		{"same user twice", htpasswdAlice + "\n" + htpasswdAlice + "\n", nil, nil, 2},
		{"no colon", htpasswdAlice + "\nhunter2-no-colon\n", nil, nil, 2},
		{"empty user", ":hunter2-empty-user\n", nil, nil, 1},
		{"empty hash", "hunter2-empty-hash:\n", nil, nil, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "htpasswd")
			if err := os.WriteFile(f, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := substituter.LoadCredentials(f)
			if tc.good != nil {
				if err != nil {
					t.Fatal(err)
				}
				for user, pw := range tc.good {
					if !c.Verify(user, pw) {
						t.Errorf("%s with the right password refused", user)
					}
					if c.Verify(user, pw+"x") || c.Verify(user, "") {
						t.Errorf("%s with a wrong password accepted", user)
					}
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted %q", tc.content)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error %v, want %v", err, tc.wantErr)
			}
			for _, secret := range []string{"hunter2", "secret", aliceHash[7:29]} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error shows the file's content (%q): %v", secret, err)
				}
			}
			if !strings.Contains(err.Error(), f) {
				t.Errorf("error does not name the file: %v", err)
			}
			if tc.line != 0 && !strings.Contains(err.Error(), fmt.Sprintf("line %d:", tc.line)) {
				t.Errorf("error does not name line %d: %v", tc.line, err)
			}
			if tc.wantErr != nil && tc.wantErr != substituter.ErrNoCredentials && !strings.Contains(err.Error(), "htpasswd -B") {
				t.Errorf("error does not say how to write a bcrypt entry: %v", err)
			}
		})
	}
	if _, err := substituter.LoadCredentials(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestVerify(t *testing.T) {
	c := testCredentials(t, "alice", "pw-a", "bob", "pw-b")
	for _, tc := range []struct {
		user, password string
		want           bool
	}{
		{"alice", "pw-a", true},
		{"bob", "pw-b", true},
		{"alice", "pw-b", false}, // another user's password
		{"Alice", "pw-a", false},
		{"alice", "pw-a ", false},
		{"alice", "", false},
		{"mallory", "pw-a", false},
		{"", "", false},
		{"alicep", "w-a", false}, // the same bytes, split elsewhere
	} {
		// Twice: the second answer may come from the cache of verified
		// pairs, and must be the same.
		for range 2 {
			if got := c.Verify(tc.user, tc.password); got != tc.want {
				t.Errorf("Verify(%q, %q) = %v, want %v", tc.user, tc.password, got, tc.want)
			}
		}
	}
}
