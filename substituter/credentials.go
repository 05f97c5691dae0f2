package substituter

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/nixoci/nixoci/internal/serving"
)

// Errors of credentials files. Their messages never quote the file's
// content.
var (
	// ErrNoCredentials: uploads were enabled without any credentials.
	ErrNoCredentials = errors.New("substituter: uploads need credentials")
	// ErrPlaintextPassword: an entry is not hashed. Like distribution,
	// Apache httpd (outside Windows) and nginx (without {PLAIN}), nixoci
	// never compares passwords in clear.
	ErrPlaintextPassword = errors.New("plaintext password")
	// ErrUnsupportedHash: an entry is hashed with a scheme other than
	// bcrypt.
	ErrUnsupportedHash = errors.New("unsupported password hash")
)

// Bounds of the memory of verifications: bcrypt is slow by design (2 ms
// at htpasswd -B's cost 5, a second at cost 14), and `nix copy --to`
// sends a request per NAR and narinfo, so a user's password is checked
// with bcrypt once per passwordCacheTTL instead of on every request; a
// wrong one sent again (a stale netrc file) is refused from memory too.
// Refusals have a memory of their own, so that a flood of wrong
// passwords does not push out the users who uploaded.
const (
	passwordCacheMax = 1024
	passwordCacheTTL = 10 * time.Minute
	refusedCacheMax  = 4096
)

// Credentials are the users who may upload and their bcrypt password
// hashes, as in an htpasswd file written by `htpasswd -B` (the format
// distribution and nginx read). Verifications are remembered for 10
// minutes, at most 1024 user/password pairs verified and 4096 refused,
// keyed by an HMAC of user and password under a key drawn for each
// process: the password itself is never kept. Authenticate bounds the
// bcrypt work each client can cause.
type Credentials struct {
	hashes   map[string][]byte
	unknown  []byte // a hash checked for unknown users, so they take as long
	key      []byte // of the verified HMACs
	verified *serving.LRU[struct{}]
	refused  *serving.LRU[struct{}]
	limits   checkLimits
}

// LoadCredentials reads an htpasswd file (see ParseCredentials).
func LoadCredentials(path string) (*Credentials, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Mode().Perm()&0o077 != 0 {
		slog.Warn("credentials file is readable by others; chmod 600 it", "file", path)
	}
	return ParseCredentials(f, path)
}

// ParseCredentials reads the htpasswd format from r, named name in
// errors: one "user:hash" a line, blank lines and lines starting with #
// ignored. Every hash must be bcrypt ($2y$, as htpasswd -B writes, $2a$
// or $2b$); any other scheme, or a password in clear, is an error naming
// the line and the scheme, so that a file meant for another server is
// refused at startup rather than half working.
func ParseCredentials(r io.Reader, name string) (*Credentials, error) {
	c := &Credentials{
		hashes:   map[string][]byte{},
		verified: serving.NewLRU[struct{}](passwordCacheMax),
		refused:  serving.NewLRU[struct{}](refusedCacheMax),
		limits:   newCheckLimits(),
	}
	lines := map[string]int{}
	maxCost := bcrypt.MinCost
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		user, hash, ok := strings.Cut(text, ":")
		if !ok || user == "" || hash == "" {
			return nil, fmt.Errorf("credentials file %s: line %d: want user:hash, as htpasswd -B writes", name, line)
		}
		if first, dup := lines[user]; dup {
			return nil, fmt.Errorf("credentials file %s: line %d: the user of line %d again", name, line, first)
		}
		if err := checkBcrypt(hash); err != nil {
			return nil, fmt.Errorf("credentials file %s: line %d: %w; nixoci accepts only bcrypt hashes: write the entry with htpasswd -B %s USER", name, line, err, name)
		}
		cost, _ := bcrypt.Cost([]byte(hash))
		maxCost = max(maxCost, cost)
		c.hashes[user], lines[user] = []byte(hash), line
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("credentials file %s: %w", name, err)
	}
	if len(c.hashes) == 0 {
		return nil, fmt.Errorf("credentials file %s: %w", name, ErrNoCredentials)
	}
	c.key = make([]byte, 32)
	rand.Read(c.key)
	var err error
	// Capped: a hash of cost 20 would take a minute to make at startup.
	if c.unknown, err = bcrypt.GenerateFromPassword([]byte(rand.Text()), min(maxCost, 14)); err != nil {
		return nil, err
	}
	return c, nil
}

// bcryptHashLen is the length of "$2y$05$" and the salt and hash in
// bcrypt's base64: bcrypt.Cost does not check the end of a hash.
const bcryptHashLen = 60

// checkBcrypt says what is wrong with hash if it is not a bcrypt hash.
func checkBcrypt(hash string) error {
	if strings.HasPrefix(hash, "$2") {
		if _, err := bcrypt.Cost([]byte(hash)); err != nil || len(hash) != bcryptHashLen {
			return fmt.Errorf("malformed bcrypt hash: %w", ErrUnsupportedHash)
		}
		return nil
	}
	for _, s := range []struct {
		prefix, scheme string
		err            error
	}{
		{"$apr1$", "Apache MD5 ($apr1$, htpasswd's default)", ErrUnsupportedHash},
		{"{SHA}", "SHA-1 ({SHA}, htpasswd -s)", ErrUnsupportedHash},
		{"{SSHA}", "salted SHA-1 ({SSHA})", ErrUnsupportedHash},
		{"$1$", "MD5 crypt ($1$)", ErrUnsupportedHash},
		{"$5$", "SHA-256 crypt ($5$, htpasswd -2)", ErrUnsupportedHash},
		{"$6$", "SHA-512 crypt ($6$, htpasswd -5)", ErrUnsupportedHash},
		{"{PLAIN}", "nginx's {PLAIN}", ErrPlaintextPassword},
	} {
		if strings.HasPrefix(hash, s.prefix) {
			return fmt.Errorf("%s: %w", s.scheme, s.err)
		}
	}
	if strings.HasPrefix(hash, "$") || strings.HasPrefix(hash, "{") {
		return fmt.Errorf("unknown hash scheme: %w", ErrUnsupportedHash)
	}
	return fmt.Errorf("a password in clear (or a crypt(3) DES hash, htpasswd -d): %w", ErrPlaintextPassword)
}

// Verify reports whether password is user's, in about the same time for
// unknown users as for known ones. It is not bounded: serve uses
// Authenticate.
func (c *Credentials) Verify(user, password string) bool {
	key := c.cacheKey(user, password)
	if ok, known := c.remembered(key); known {
		return ok
	}
	return c.verify(key, user, password)
}

// remembered answers for the user and password of key from memory.
func (c *Credentials) remembered(key string) (ok, known bool) {
	if _, ok := c.verified.Get(key); ok {
		return true, true
	}
	if _, ok := c.refused.Get(key); ok {
		return false, true
	}
	return false, false
}

// verify checks password with bcrypt and remembers the answer under key.
func (c *Credentials) verify(key, user, password string) bool {
	hash, known := c.hashes[user]
	if !known {
		hash = c.unknown
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil || !known {
		c.refused.Put(key, struct{}{}, passwordCacheTTL)
		return false
	}
	c.verified.Put(key, struct{}{}, passwordCacheTTL)
	return true
}

// users is the number of users.
func (c *Credentials) users() int { return len(c.hashes) }

// cacheKey is the HMAC of user and password under c's key.
func (c *Credentials) cacheKey(user, password string) string {
	mac := hmac.New(sha256.New, c.key)
	mac.Write(binary.BigEndian.AppendUint64(nil, uint64(len(user)))) // where the user name ends
	io.WriteString(mac, user)
	io.WriteString(mac, password)
	return string(mac.Sum(nil))
}
