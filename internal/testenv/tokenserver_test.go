package testenv

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func testTokenServer(t *testing.T) *TokenServer {
	return StartTokenServer(t, TokenOptions{
		Users: map[string]TokenUser{
			"writer": {Password: "w-pw", Grants: map[string][]string{"*": {"pull", "push"}}},
			"reader": {Password: "r-pw", Grants: map[string][]string{"nix": {"pull"}}},
		},
		Anonymous: map[string][]string{"public": {"pull"}},
	})
}

// getToken asks s for scopes as user (none if empty) and returns the
// status and the token's claims (verified against s.CertFile).
func getToken(t *testing.T, s *TokenServer, user, password string, scopes ...string) (int, map[string]any) {
	t.Helper()
	q := url.Values{"service": {s.Service}, "scope": scopes}
	req, _ := http.NewRequest(http.MethodGet, s.Realm+"?"+q.Encode(), nil)
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil
	}
	var body struct {
		Token     string `json:"token"`
		ExpiresIn int    `json:"expires_in"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if body.ExpiresIn != 300 {
		t.Errorf("expires_in %d, want 300", body.ExpiresIn)
	}
	return resp.StatusCode, verifyES256(t, s.CertFile, body.Token)
}

// verifyES256 checks a JWT's signature with the certificate in certFile
// and returns its claims.
func verifyES256(t *testing.T, certFile, token string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(cert.PublicKey.(*ecdsa.PublicKey), sum[:], r, s) {
		t.Fatal("token signature does not verify with the certificate")
	}
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

// TestTokenServerGrants: users get what they are allowed of what they
// ask, anonymous requests what Anonymous allows, wrong passwords a 401.
func TestTokenServerGrants(t *testing.T) {
	s := testTokenServer(t)
	for _, tc := range []struct {
		name, user, password string
		scopes               []string
		status               int
		granted              []string
	}{
		{"writer", "writer", "w-pw", []string{"repository:nix:pull,push"}, 200, []string{"repository:nix:pull,push"}},
		{"reader asks push", "reader", "r-pw", []string{"repository:nix:pull,push"}, 200, []string{"repository:nix:pull"}},
		{"reader elsewhere", "reader", "r-pw", []string{"repository:other:pull"}, 200, nil},
		{"two scopes", "reader", "r-pw", []string{"repository:nix:pull", "repository:public:pull"}, 200, []string{"repository:nix:pull", "repository:public:pull"}},
		{"anonymous public", "", "", []string{"repository:public:pull,push"}, 200, []string{"repository:public:pull"}},
		{"anonymous private", "", "", []string{"repository:nix:pull"}, 200, nil},
		{"wrong password", "writer", "nope", []string{"repository:nix:pull"}, 401, nil},
		{"unknown user", "nobody", "w-pw", []string{"repository:nix:pull"}, 401, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, claims := getToken(t, s, tc.user, tc.password, tc.scopes...)
			if status != tc.status {
				t.Fatalf("status %d, want %d", status, tc.status)
			}
			if status != 200 {
				return
			}
			if claims["iss"] != s.Issuer || claims["aud"] != s.Service || claims["sub"] != tc.user {
				t.Errorf("claims iss %v aud %v sub %v", claims["iss"], claims["aud"], claims["sub"])
			}
			var granted []string
			for _, a := range claims["access"].([]any) {
				m := a.(map[string]any)
				var actions []string
				for _, x := range m["actions"].([]any) {
					actions = append(actions, x.(string))
				}
				granted = append(granted, m["type"].(string)+":"+m["name"].(string)+":"+strings.Join(actions, ","))
			}
			slices.Sort(granted)
			if !slices.Equal(granted, tc.granted) {
				t.Errorf("granted %v, want %v", granted, tc.granted)
			}
		})
	}
	if got := len(s.Requests()); got != 8 {
		t.Errorf("%d requests recorded, want 8", got)
	}
	if got := len(s.Issued()); got != 6 {
		t.Errorf("%d tokens issued, want 6", got)
	}
}

// TestTokenServerWithRegistries: docker-registry and distribution v3
// accept the tokens for what they grant and refuse them after RotateKey
// and a restart.
func TestTokenServerWithRegistries(t *testing.T) {
	for _, program := range []string{"docker-registry", "registry"} {
		t.Run(program, func(t *testing.T) {
			s := testTokenServer(t)
			reg := StartRegistry(t, RegistryOptions{Token: s, Program: program})
			get := func(token string) (int, string) {
				req, _ := http.NewRequest(http.MethodGet, reg.URL()+"/v2/nix/tags/list", nil)
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
			}
			status, challenge := get("")
			if status != 401 || !strings.Contains(challenge, `realm="`+s.Realm+`"`) || !strings.Contains(challenge, "repository:nix:pull") {
				t.Fatalf("without a token: %d %q, want 401 with a Bearer challenge", status, challenge)
			}
			getToken(t, s, "reader", "r-pw", "repository:nix:pull")
			token := s.Issued()[0]
			if status, _ := get(token); status != http.StatusNotFound { // authorized; no such repository yet
				t.Fatalf("with a pull token: %d, want 404", status)
			}
			getToken(t, s, "reader", "r-pw", "repository:other:pull")
			if status, _ := get(s.Issued()[1]); status != 401 {
				t.Fatalf("with a token for another repository: %d, want 401", status)
			}
			s.RotateKey()
			reg.Stop()
			reg.Start()
			if status, _ := get(token); status != 401 {
				t.Fatalf("with a token of the old key: %d, want 401", status)
			}
		})
	}
}

// TestCredentialHelper: the script answers get for its host only.
func TestCredentialHelper(t *testing.T) {
	h := NewCredentialHelper(t, "test", "127.0.0.1:5000", "u", "p'w")
	helper := func(action, server string) (string, error) {
		cmd := exec.Command(h.Dir+"/docker-credential-test", action)
		cmd.Stdin = strings.NewReader(server)
		out, err := cmd.Output()
		return string(out), err
	}
	out, err := helper("get", "127.0.0.1:5000")
	var cred map[string]string
	if err != nil || json.Unmarshal([]byte(out), &cred) != nil || cred["Username"] != "u" || cred["Secret"] != "p'w" {
		t.Errorf("get for its host: %q, %v", out, err)
	}
	if out, err := helper("get", "other:5000"); err == nil || !strings.Contains(out, "credentials not found") {
		t.Errorf("get for another host: %q, %v; want not found", out, err)
	}
	if got, want := h.Calls(t), []string{"get 127.0.0.1:5000", "get other:5000"}; !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
}
