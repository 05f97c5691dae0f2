package backend

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// Options configure how targets are opened. The zero value reads
// credentials from the docker config file, uses HTTPS except for
// loopback registries, and uploads blobs over DefaultChunkSize in chunks.
type Options struct {
	// PlainHTTP talks plain HTTP to every registry, not only to loopback
	// ones (127.0.0.0/8, ::1, localhost).
	PlainHTTP bool
	// Create makes a missing image-layout directory (for writing).
	Create bool
	// HTTPClient, when set, is the transport under authentication; it
	// defaults to DefaultHTTPClient. Operations on a registry are retried
	// as RetryAttempts describes, whichever client is used.
	HTTPClient *http.Client
	// UserAgent is sent to registries.
	UserAgent string
	// ChunkSize: a blob larger than this is uploaded to a registry in
	// chunks of this size (PATCH with Content-Range), so that it passes
	// proxies that limit request bodies; 0 means DefaultChunkSize, a
	// negative size uploads every blob in one request.
	ChunkSize int64
	// Credentials, when set, gives the registry credentials instead of
	// the docker config file.
	Credentials auth.CredentialFunc
}

// Target is what nixoci reads and writes: content, tags and manifests
// fetched by reference in one round trip.
type Target interface {
	oras.Target
	registry.ReferenceFetcher
	registry.ReferencePusher
	BlobResolver
	Pinger
	ReferrerLister
	TagLister
}

// Open opens the target r names (its Reference is ignored).
func Open(ctx context.Context, r Ref, opts Options) (Target, error) {
	if r.IsLayout() {
		return OpenLayout(r.Layout, opts.Create)
	}
	return openRemote(r, opts)
}

func openRemote(r Ref, opts Options) (Target, error) {
	repo, err := remote.NewRepository(r.Registry + "/" + r.Repository)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.Base(), err)
	}
	repo.PlainHTTP = opts.PlainHTTP || IsLoopback(r.Registry)
	repo.Client = newAuthClient(opts)
	chunkSize := opts.ChunkSize
	if chunkSize == 0 {
		chunkSize = DefaultChunkSize
	}
	return &remoteTarget{Repository: repo, name: r.Base().String(), chunkSize: chunkSize}, nil
}

// IsLoopback reports whether a "HOST[:PORT]" names this machine.
func IsLoopback(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// BlobResolver finds a blob's descriptor (size) by digest without
// fetching it. Every Target that Open returns implements it.
type BlobResolver interface {
	ResolveBlob(ctx context.Context, d digest.Digest) (ocispec.Descriptor, error)
}

// Pinger checks that a target is reachable and usable. Every Target that
// Open returns implements it.
type Pinger interface {
	Ping(ctx context.Context) error
}

// ResolveBlob implements BlobResolver with a HEAD request.
func (r *remoteTarget) ResolveBlob(ctx context.Context, d digest.Digest) (desc ocispec.Descriptor, err error) {
	err = r.retry(ctx, "resolving blob "+d.String(), func(ctx context.Context) (err error) {
		desc, err = r.Repository.Blobs().Resolve(ctx, d.String())
		return err
	})
	return desc, err
}

// Ping implements Pinger: GET /v2/ with the repository's credentials.
func (r *remoteTarget) Ping(ctx context.Context) error {
	reg := &remote.Registry{RepositoryOptions: remote.RepositoryOptions{
		Client: r.Repository.Client, PlainHTTP: r.Repository.PlainHTTP,
		Reference: registry.Reference{Registry: r.Repository.Reference.Registry},
	}}
	return r.retry(ctx, "ping", reg.Ping)
}
