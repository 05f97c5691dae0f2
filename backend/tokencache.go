package backend

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// refreshMargin is how long before a token expires it is fetched again
// (at most; a fifth of its lifetime for short-lived tokens).
const refreshMargin = 30 * time.Second

// expiringCache is an auth.Cache that keeps a bearer token until it
// expires, then fetches the next one before a request would use it.
// oras-go's cache keeps a token until a registry refuses it; the refused
// request is then sent again, which for a chunk of an upload means its
// body twice (and a chunk's body cannot be sent again, see
// chunkedUpload). A token's lifetime is read from its JWT claims (exp,
// less iat, so the token server's clock does not matter); tokens that
// are not JWTs are kept until refused, as oras-go does. The new token is
// fetched as the old one was (same realm, service, scopes, credentials).
type expiringCache struct {
	auth.Cache
	now func() time.Time

	mu       sync.Mutex
	entries  map[string]*tokenEntry // by cacheID
	refusals map[refusalKey][]refusal
	fetches  singleflight.Group
}

// refusal is the bearer token ("" for none) a request carried when the
// registry answered 401. auth.Client calls Set with the refused
// request's context and host; requests sent at once (the blobs of a
// copy) share one context, so each refusal is kept, not the last only:
// one Set per refusal takes one.
type refusal struct {
	token string
	at    time.Time
}

// refusalKey is what a refusal and the Set that follows it share.
type refusalKey struct {
	ctx      context.Context
	registry string
}

const (
	// refusalsKept bounds how long a refusal that no Set followed (a
	// second 401, a challenge oras-go does not answer) is remembered.
	refusalsKept = time.Minute
	// maxRefusals bounds the refusals kept per context and registry.
	maxRefusals = 256
)

// tokenEntry is what expiringCache knows of a cached bearer token.
type tokenEntry struct {
	token     string
	refreshAt time.Time // zero: not known to expire
	expires   time.Time // by this machine's clock
	fetch     func(context.Context) (string, error)
}

func newExpiringCache(c auth.Cache) *expiringCache {
	return &expiringCache{Cache: c, now: time.Now, entries: map[string]*tokenEntry{}, refusals: map[refusalKey][]refusal{}}
}

func cacheID(registry, key string) string { return registry + " " + key }

// GetToken implements auth.Cache: a bearer token due for refresh is
// fetched again first; if that fails, the old one is returned while it
// is valid, and none after (the request then goes without, and the
// registry's challenge starts a fetch that reports its failure).
func (c *expiringCache) GetToken(ctx context.Context, registry string, scheme auth.Scheme, key string) (string, error) {
	token, err := c.Cache.GetToken(ctx, registry, scheme, key)
	if err != nil || scheme != auth.SchemeBearer {
		return token, err
	}
	id := cacheID(registry, key)
	c.mu.Lock()
	e := c.entries[id]
	c.mu.Unlock()
	if e != nil && e.token != token {
		// Set stores the token, then its entry: a refresh that ended
		// between the two reads left token older than e. Read it again.
		if again, err := c.Cache.GetToken(ctx, registry, scheme, key); err == nil {
			token = again
		}
	}
	if e == nil || e.token != token || e.refreshAt.IsZero() || c.now().Before(e.refreshAt) {
		return token, nil
	}
	fresh, err, _ := c.fetches.Do(id, func() (any, error) {
		c.mu.Lock()
		cur := c.entries[id]
		c.mu.Unlock()
		if cur != e { // refreshed by another caller meanwhile
			return cur.token, nil
		}
		return c.Set(ctx, registry, scheme, key, e.fetch)
	})
	if err == nil {
		return fresh.(string), nil
	}
	if c.now().Before(e.expires) {
		return token, nil
	}
	return "", errdef.ErrNotFound
}

// noteRefusal records that a request to registry with context ctx was
// refused while carrying token.
func (c *expiringCache) noteRefusal(ctx context.Context, registry, token string) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, rs := range c.refusals {
		for len(rs) > 0 && now.Sub(rs[0].at) > refusalsKept {
			rs = rs[1:]
		}
		if len(rs) == 0 {
			delete(c.refusals, k)
		} else {
			c.refusals[k] = rs
		}
	}
	k := refusalKey{ctx, registry}
	rs := append(c.refusals[k], refusal{token: token, at: now})
	c.refusals[k] = rs[max(len(rs)-maxRefusals, 0):]
}

// takeRefusal removes and returns a refusal noted for ctx and registry:
// one that carried current, if any (the registry refused the token
// cached: a new one is due), else the oldest.
func (c *expiringCache) takeRefusal(ctx context.Context, registry, current string) (refusal, bool) {
	k := refusalKey{ctx, registry}
	rs := c.refusals[k]
	if len(rs) == 0 {
		return refusal{}, false
	}
	i := 0
	for j, r := range rs {
		if r.token == current {
			i = j
			break
		}
	}
	r := rs[i]
	rs = append(rs[:i:i], rs[i+1:]...)
	if len(rs) == 0 {
		delete(c.refusals, k)
	} else {
		c.refusals[k] = rs
	}
	return r, true
}

// Set implements auth.Cache, remembering when a bearer token is due for
// refresh and how it was fetched. A request refused without the token
// now cached for key (it was sent before that token was fetched) gets
// that token, if it is not due for refresh, instead of a new one.
func (c *expiringCache) Set(ctx context.Context, registry string, scheme auth.Scheme, key string, fetch func(context.Context) (string, error)) (string, error) {
	if scheme == auth.SchemeBearer {
		c.mu.Lock()
		e := c.entries[cacheID(registry, key)]
		current := ""
		if e != nil {
			current = e.token
		}
		r, refused := c.takeRefusal(ctx, registry, current)
		c.mu.Unlock()
		if refused && e != nil && r.token != e.token && (e.refreshAt.IsZero() || c.now().Before(e.refreshAt)) {
			if cached, err := c.Cache.GetToken(ctx, registry, scheme, key); err == nil && cached == e.token {
				return cached, nil
			}
		}
	}
	token, err := c.Cache.Set(ctx, registry, scheme, key, fetch)
	if err != nil || scheme != auth.SchemeBearer {
		return token, err
	}
	e := &tokenEntry{token: token, fetch: fetch}
	if lifetime, ok := jwtLifetime(token, c.now()); ok {
		e.expires = c.now().Add(lifetime)
		e.refreshAt = e.expires.Add(-min(refreshMargin, lifetime/5))
	}
	c.mu.Lock()
	c.entries[cacheID(registry, key)] = e
	c.mu.Unlock()
	return token, nil
}

// jwtClaims are the claims of a token that say how long it lasts.
type jwtClaims struct {
	IssuedAt   int64 `json:"iat"`
	Expiration int64 `json:"exp"`
}

// parseJWTClaims decodes (without verifying: the registry does that) the
// claims of a JWT in compact form.
func parseJWTClaims(token string) (jwtClaims, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return jwtClaims{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return jwtClaims{}, false
	}
	var c jwtClaims
	if json.Unmarshal(payload, &c) != nil || c.Expiration <= 0 {
		return jwtClaims{}, false
	}
	return c, true
}

// jwtLifetime is how long a token fetched at now lasts: exp-iat when the
// token says when it was issued, else exp-now.
func jwtLifetime(token string, now time.Time) (time.Duration, bool) {
	c, ok := parseJWTClaims(token)
	if !ok {
		return 0, false
	}
	var d time.Duration
	if c.IssuedAt > 0 && c.IssuedAt < c.Expiration {
		d = time.Duration(c.Expiration-c.IssuedAt) * time.Second
	} else {
		d = time.Unix(c.Expiration, 0).Sub(now)
	}
	return d, d > 0
}
