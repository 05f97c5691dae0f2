package backend

import (
	"log/slog"

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
// a registry refuses one.
func newAuthClient(opts Options) *auth.Client {
	client := &auth.Client{
		Client:     opts.HTTPClient,
		Cache:      newExpiringCache(auth.NewCache()),
		Credential: opts.Credentials,
	}
	if client.Client == nil {
		client.Client = DefaultHTTPClient()
	}
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
