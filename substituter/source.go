package substituter

import (
	"context"
	"errors"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/catalog"
	"github.com/nixoci/nixoci/internal/serving"
)

// Source is one place the resolver finds store paths in. The resolver
// asks its sources in order; the first that finds a path answers.
// Today's sources are each backend by tag, then each backend's catalog
// of closures; another kind (an upstream binary cache, say) is one more
// Source whose Found names its NAR with its own NARLocation.
type Source interface {
	// Name names the source in logs and errors.
	Name() string
	// Find returns the store path with hash part hash, checked against
	// what led to it (artifact.PathClaim). A path the source does not
	// have is an error wrapping ErrNotFound; any other error is a
	// failure, which the server answers 5xx.
	Find(ctx context.Context, hash string) (Found, error)
}

// ErrNotFound: a source does not have the path. It is errdef.ErrNotFound,
// as backends say it.
var ErrNotFound = errdef.ErrNotFound

// Found is a store path as a source found it.
type Found struct {
	// Artifact is the path: its narinfo as stored (Artifact.Info,
	// signatures included) and the descriptor of its NAR
	// (Artifact.NAR: digest FileHash, size FileSize, media type by
	// Compression, titled URL). A path kept in a registry also has its
	// manifest and narinfo blob; other sources leave those zero.
	Artifact artifact.PathArtifact
	// NAR is where the NAR is.
	NAR NARLocation
}

// NARLocation says where a found path's NAR is, for serveNAR and the
// NARs fetched ahead. Backends' blobs are backendNAR; another kind of
// source adds its own type.
type NARLocation interface {
	// Blob is the NAR blob's descriptor.
	Blob() ocispec.Descriptor
}

// backendNAR: the NAR is a blob of one of the backends.
type backendNAR serving.BlobLocation

func (l backendNAR) Blob() ocispec.Descriptor { return l.Desc }

// backendIndex is the backend holding f's NAR and manifest, if a backend
// found it.
func (f Found) backendIndex() (int, bool) {
	l, ok := f.NAR.(backendNAR)
	return l.Backend, ok
}

// tagSource finds paths in one backend by their tags (SPEC.md section
// 5.3, step 1).
type tagSource struct {
	s *Server
	i int
}

func (t tagSource) Name() string { return t.s.backends.List()[t.i].Name }

func (t tagSource) Find(ctx context.Context, hash string) (Found, error) {
	return t.s.fromBackend(ctx, t.i, artifact.PathClaim{Hash: hash})
}

// catalogSource finds paths in the closures of one backend (SPEC.md
// section 5.3, step 2): closures copied without their path tags.
type catalogSource struct {
	s   *Server
	i   int
	cat *catalog.Catalog
	// listed: the catalog lists the backend's closures (refreshes are
	// on), so a miss is absence only once it read them all. Without,
	// it holds only closures found from their roots, and never claims
	// to know every closure: a miss is absence.
	listed bool
}

func (c catalogSource) Name() string { return c.s.backends.List()[c.i].Name + " (closures)" }

// Find waits (within ctx) until the catalogs were read once: a "not
// found" Nix would remember for an hour must not come from a catalog not
// read yet. A catalog that could not read every closure says so
// (catalog.ErrIncomplete): a failure, since the closure it could not read
// may hold the path.
func (c catalogSource) Find(ctx context.Context, hash string) (Found, error) {
	select {
	case <-c.s.ready:
	case <-ctx.Done():
		return Found{}, fmt.Errorf("%s: waiting for the closures of the backends to be read: %w", hash, ctx.Err())
	}
	members, err := c.cat.Lookup(hash)
	if errors.Is(err, catalog.ErrIncomplete) && !c.listed {
		return Found{}, fmt.Errorf("%s: %w", hash, ErrNotFound)
	}
	if err != nil {
		return Found{}, err
	}
	// Closures may name different manifests for the path: the first
	// that checks out answers.
	var errs []error
	for _, m := range members {
		f, err := c.s.fromBackend(ctx, c.i, m.Claim())
		if err == nil {
			return f, nil
		}
		if isNotFound(err) {
			// The closure lists it, the registry lacks it: not absence,
			// a closure broken or deleted since the catalog read it.
			// (%v: the error must not read as "not found".)
			err = fmt.Errorf("%s: a closure lists %s, whose manifest is gone: %v", c.Name(), m.StorePath, err)
		}
		errs = append(errs, err)
	}
	return Found{}, errors.Join(errs...)
}

// fromBackend reads the path artifact claim leads to in backend i, within
// the bound on backend requests, checked against the claim.
func (s *Server) fromBackend(ctx context.Context, i int, claim artifact.PathClaim) (Found, error) {
	art, err := serving.AskOne(ctx, s.backends, i, s.metrics.narinfo, func(ctx context.Context, t backend.Target) (artifact.PathArtifact, error) {
		return artifact.ResolvePath(ctx, t, claim)
	})
	if err != nil {
		return Found{}, err
	}
	return Found{Artifact: art, NAR: backendNAR{Backend: i, Desc: art.NAR}}, nil
}
