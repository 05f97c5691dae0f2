package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"

	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/nixoci/nixoci/backend"
)

// byteSize is a flag holding a size in bytes, as parseSize reads it.
type byteSize int64

func (s *byteSize) String() string {
	n := int64(*s)
	for _, u := range []struct {
		name string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

func (s *byteSize) Set(v string) error {
	n, err := parseSize(v)
	*s = byteSize(n)
	return err
}

// chunkSizeFlag defines --chunk-size on fs.
func chunkSizeFlag(fs *flag.FlagSet) *byteSize {
	s := byteSize(backend.DefaultChunkSize)
	fs.Var(&s, "chunk-size", "upload blobs larger than this to registries in chunks of this size (e.g. 4MiB), so that they pass proxies with a request body limit (nginx's client_max_body_size, Cloudflare's 100 MB); 0 sends every blob in one request")
	return &s
}

// option opens targets with this chunk size.
func (s *byteSize) option() targetOption {
	return func(o *backend.Options) {
		o.ChunkSize = int64(*s)
		if o.ChunkSize == 0 {
			o.ChunkSize = -1 // in one request
		}
	}
}

// chunkHint names the flag that helps when a proxy refused a body.
func chunkHint(err error) error {
	if errors.Is(err, backend.ErrBodyTooLarge) {
		return fmt.Errorf("%w (set --chunk-size below the proxy's limit, e.g. --chunk-size 4MiB)", err)
	}
	return err
}

// Environment variables with registry credentials for serve, for
// containers where a docker config file is awkward to provide.
const (
	envRegistryUser     = "NIXOCI_REGISTRY_USERNAME"
	envRegistryPassword = "NIXOCI_REGISTRY_PASSWORD"
)

// envCredentials returns an option giving the registry credentials of
// NIXOCI_REGISTRY_USERNAME and NIXOCI_REGISTRY_PASSWORD, or nil if
// neither is set.
func envCredentials() (targetOption, error) {
	user, password := os.Getenv(envRegistryUser), os.Getenv(envRegistryPassword)
	if user == "" && password == "" {
		return nil, nil
	}
	if user == "" || password == "" {
		return nil, fmt.Errorf("%w: set both %s and %s, or neither", errUsage, envRegistryUser, envRegistryPassword)
	}
	cred := auth.Credential{Username: user, Password: password}
	return func(o *backend.Options) {
		o.Credentials = func(context.Context, string) (auth.Credential, error) { return cred, nil }
	}, nil
}
