package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TokenOptions configure StartTokenServer.
type TokenOptions struct {
	// Users who may log in, by name.
	Users map[string]TokenUser
	// Anonymous lists, per repository name, the actions granted to
	// requests without credentials (e.g. {"public": {"pull"}}).
	Anonymous map[string][]string
	// Lifetime of the tokens issued; default 5 minutes (what Docker Hub
	// issues).
	Lifetime time.Duration
}

// TokenUser is a user of a TokenServer.
type TokenUser struct {
	Password string
	// Grants lists, per repository name ("*" for any), the actions the
	// user may be granted ("pull", "push", "delete").
	Grants map[string][]string
}

// TokenRequest records one request a TokenServer answered.
type TokenRequest struct {
	User    string   // "" for anonymous requests
	Scopes  []string // the scope parameters, as sent
	Granted []string // "repository:NAME:ACTIONS" granted, sorted
	Status  int
}

// TokenServer is a token server of the distribution token authentication
// spec (https://distribution.github.io/distribution/spec/auth/token/):
// the registry answers 401 with a Bearer challenge naming Realm, and the
// client asks Realm for a JWT granting the scopes it needs. Tokens are
// ES256-signed by a key whose self-signed certificate (CertFile) the
// registry trusts as its rootcertbundle, and carry it in their x5c
// header. Pass it as RegistryOptions.Token.
type TokenServer struct {
	URL      string // "http://127.0.0.1:PORT"
	Realm    string // URL + "/token"
	Service  string // the registry's service name (aud)
	Issuer   string // iss
	CertFile string // PEM certificate of the signing key

	opts TokenOptions
	t    testing.TB

	mu       sync.Mutex
	key      *ecdsa.PrivateKey
	certDER  []byte
	requests []TokenRequest
	issued   []string
}

// StartTokenServer starts a TokenServer on a free 127.0.0.1 port (on the
// same host as the registries of testenv, so that clients which refuse
// token realms on loopback for remote registries accept it). t.Cleanup
// stops it.
func StartTokenServer(t testing.TB, opts TokenOptions) *TokenServer {
	t.Helper()
	if opts.Lifetime <= 0 {
		opts.Lifetime = 5 * time.Minute
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("StartTokenServer: %v", err)
	}
	s := &TokenServer{
		URL:      "http://" + ln.Addr().String(),
		Service:  "nixoci-test-registry",
		Issuer:   "nixoci-test-token-server",
		CertFile: filepath.Join(t.TempDir(), "token-signer.pem"),
		opts:     opts,
		t:        t,
	}
	s.Realm = s.URL + "/token"
	s.RotateKey()
	srv := &http.Server{Handler: http.HandlerFunc(s.serve), ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

// RotateKey replaces the signing key and rewrites CertFile with the new
// certificate. A registry trusts the new key only once restarted, and
// from then on refuses every token signed before.
func (s *TokenServer) RotateKey() {
	s.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		s.t.Fatalf("TokenServer: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "nixoci test token signer"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		s.t.Fatalf("TokenServer: %v", err)
	}
	pemData := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(s.CertFile, pemData, 0o644); err != nil {
		s.t.Fatalf("TokenServer: %v", err)
	}
	s.mu.Lock()
	s.key, s.certDER = key, der
	s.mu.Unlock()
}

// Requests returns a copy of every request answered so far, in order.
func (s *TokenServer) Requests() []TokenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Issued returns every token issued so far.
func (s *TokenServer) Issued() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.issued)
}

// CountByScopes counts the requests that were granted a token by their
// scope parameters (joined by spaces, in the order sent).
func (s *TokenServer) CountByScopes() map[string]int {
	counts := map[string]int{}
	for _, r := range s.Requests() {
		if r.Status == http.StatusOK {
			counts[strings.Join(r.Scopes, " ")]++
		}
	}
	return counts
}

func (s *TokenServer) serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	rec := TokenRequest{Scopes: q["scope"]}
	fail := func(status int, code, msg string) {
		rec.Status = status
		s.record(rec, "")
		w.Header().Set("Content-Type", "application/json")
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="nixoci test token server"`)
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`+"\n", code, msg)
	}
	if r.URL.Path != "/token" || r.Method != http.MethodGet {
		fail(http.StatusNotFound, "NOT_FOUND", "GET /token only")
		return
	}
	if q.Get("service") != s.Service {
		fail(http.StatusBadRequest, "INVALID_REQUEST", "unknown service "+q.Get("service"))
		return
	}
	var grants map[string][]string
	if name, password, ok := r.BasicAuth(); ok {
		u, known := s.opts.Users[name]
		if !known || u.Password != password {
			fail(http.StatusUnauthorized, "UNAUTHORIZED", "invalid username or password")
			return
		}
		rec.User, grants = name, u.Grants
	}
	var access []tokenAccess
	for _, scope := range rec.Scopes {
		for _, one := range splitScopes(scope) {
			typ, name, actions, ok := parseScope(one)
			if !ok || typ != "repository" {
				continue // not granted
			}
			var allowed []string
			allowed = append(allowed, grants[name]...)
			allowed = append(allowed, grants["*"]...)
			allowed = append(allowed, s.opts.Anonymous[name]...)
			var granted []string
			for _, a := range actions {
				if slices.Contains(allowed, a) && !slices.Contains(granted, a) {
					granted = append(granted, a)
				}
			}
			if len(granted) > 0 {
				access = append(access, tokenAccess{Type: typ, Name: name, Actions: granted})
				rec.Granted = append(rec.Granted, typ+":"+name+":"+strings.Join(granted, ","))
			}
		}
	}
	slices.Sort(rec.Granted)
	token, err := s.sign(rec.User, access)
	if err != nil {
		fail(http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	rec.Status = http.StatusOK
	s.record(rec, token)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"token":        token,
		"access_token": token,
		"expires_in":   int(s.opts.Lifetime.Seconds()),
		"issued_at":    time.Now().UTC().Format(time.RFC3339),
	})
}

func (s *TokenServer) record(rec TokenRequest, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, rec)
	if token != "" {
		s.issued = append(s.issued, token)
	}
}

// tokenAccess is one entry of a token's "access" claim.
type tokenAccess struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// sign makes a JWT for subject with access, ES256 over the current key,
// the certificate in x5c.
func (s *TokenServer) sign(subject string, access []tokenAccess) (string, error) {
	s.mu.Lock()
	key, certDER := s.key, s.certDER
	s.mu.Unlock()
	if access == nil {
		access = []tokenAccess{}
	}
	now := time.Now()
	jti := make([]byte, 12)
	rand.Read(jti)
	header, _ := json.Marshal(map[string]any{
		"typ": "JWT", "alg": "ES256",
		"x5c": []string{base64.StdEncoding.EncodeToString(certDER)},
	})
	claims, _ := json.Marshal(map[string]any{
		"iss": s.Issuer, "sub": subject, "aud": s.Service,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(s.opts.Lifetime).Unix(),
		"jti": hex.EncodeToString(jti), "access": access,
	})
	input := b64url(header) + "." + b64url(claims)
	sum := sha256.Sum256([]byte(input))
	r, sig, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		return "", err
	}
	// JWS ES256: R and S, each as 32 big-endian bytes (RFC 7518 3.4).
	raw := make([]byte, 64)
	r.FillBytes(raw[:32])
	sig.FillBytes(raw[32:])
	return input + "." + b64url(raw), nil
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// splitScopes splits a scope parameter holding several space-separated
// scopes.
func splitScopes(s string) []string { return strings.Fields(s) }

// parseScope splits "TYPE:NAME:ACTION,ACTION" (the last colon ends NAME).
func parseScope(s string) (typ, name string, actions []string, ok bool) {
	typ, rest, ok1 := strings.Cut(s, ":")
	i := strings.LastIndex(rest, ":")
	if !ok1 || i < 0 {
		return "", "", nil, false
	}
	return typ, rest[:i], strings.Split(rest[i+1:], ","), true
}

// registryConfig is the auth section of a registry configuration that
// trusts s.
func (s *TokenServer) registryConfig() string {
	return fmt.Sprintf("auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n",
		yamlString(s.Realm), yamlString(s.Service), yamlString(s.Issuer), yamlString(s.CertFile))
}
