package backend

import (
	"log/slog"
	"net/http"
	"strings"

	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
)

// newAuthClient returns the client a registry target sends every request
// through: oras-go's auth.Client, which answers a registry's 401 by
// fetching a token from the realm of its Bearer challenge (with the
// scopes the request needs: pull for reads, pull and push for writes;
// an anonymous token without credentials) or by sending Basic
// credentials. Credentials come from opts.Credentials or else the docker
// config file, with its credsStore and credHelpers (docker-credential-NAME
// programs) as docker and oras use them. Tokens are cached per registry
// and scope until they expire (see expiringCache), and fetched again when
// a registry refuses one, not when it refused a request sent before the
// token was there (refusalObserver).
func newAuthClient(opts Options) *auth.Client {
	cache := newExpiringCache(auth.NewCache())
	httpClient := opts.HTTPClient
	if httpClient == nil {
		httpClient = DefaultHTTPClient()
	}
	observed := *httpClient
	observed.Transport = &refusalObserver{base: httpClient.Transport, cache: cache}
	client := &auth.Client{Client: &observed, Cache: cache, Credential: opts.Credentials}
	if opts.UserAgent != "" {
		client.SetUserAgent(opts.UserAgent)
	}
	if client.Credential == nil {
		store, err := credentials.NewStoreFromDocker(credentials.StoreOptions{})
		if err != nil {
			// An unreadable docker config is not fatal: anonymous access may
			// still work, and a refusal will say so.
			slog.Warn("cannot read docker config; continuing without credentials", "err", err)
		} else {
			client.Credential = credentials.Credential(store)
		}
	}
	return client
}

// refusalObserver tells the cache which token each refused (401) request
// carried, so that a request sent without a token, while another one
// was fetching it, does not fetch it again: requests started at once
// each meet the registry's challenge, and oras-go's cache merges only
// the fetches that overlap.
type refusalObserver struct {
	base  http.RoundTripper
	cache *expiringCache
}

func (o *refusalObserver) RoundTrip(req *http.Request) (*http.Response, error) {
	base := o.base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusUnauthorized {
		token, bearer := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
		if !bearer {
			token = ""
		}
		host := req.Host // as auth.Client names the registry
		if host == "" {
			host = req.URL.Host
		}
		o.cache.noteRefusal(req.Context(), host, token)
	}
	return resp, err
}
