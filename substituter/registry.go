package substituter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"oras.land/oras-go/v2/errdef"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/image"
	"github.com/nixoci/nixoci/spec"
)

// RegistryOptions enable the read-only OCI distribution API under /v2/,
// which composes images from stored closures on demand (the Nixery idea,
// without evaluating Nix): a repository name is a list of closure tags
// (or names from Names) separated by "/", and its image is the union of
// those closures, one layer per store path, built with package image in
// the first backend holding all of them and reused from there.
type RegistryOptions struct {
	// Names gives friendly names and meta-packages; a name component not
	// listed here is a closure tag.
	Names map[string]NameSpec
	// Image holds defaults for composed images (compression, max layers,
	// jobs); entrypoint and the like come from Names.
	Image image.Options
}

// NameSpec is what a friendly name stands for. Options of later
// components in a repository name override earlier ones.
type NameSpec struct {
	Closures   []string `json:"closures"`
	LinkRoots  []string `json:"linkRoots,omitempty"` // default: the closures' roots
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	User       string   `json:"user,omitempty"`
	// BuildpacksStack makes the image a Cloud Native Buildpacks stack.
	BuildpacksStack string `json:"buildpacksStack,omitempty"`
}

// LoadNames reads a JSON object mapping names to NameSpecs.
func LoadNames(path string) (map[string]NameSpec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var names map[string]NameSpec
	if err := json.Unmarshal(data, &names); err != nil {
		return nil, fmt.Errorf("names file %s: %w", path, err)
	}
	for n, s := range names {
		if !nameComponent.MatchString(n) {
			return nil, fmt.Errorf("names file %s: %q is not a valid repository name component", path, n)
		}
		if len(s.Closures) == 0 {
			return nil, fmt.Errorf("names file %s: %q names no closures", path, n)
		}
	}
	return names, nil
}

// Limits on repository names, so a request cannot make us compose
// without bound.
const (
	maxNameLength     = 255
	maxNameComponents = 16
)

var nameComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)

// distribution API error codes.
const (
	codeNameInvalid     = "NAME_INVALID"
	codeNameUnknown     = "NAME_UNKNOWN"
	codeManifestUnknown = "MANIFEST_UNKNOWN"
	codeBlobUnknown     = "BLOB_UNKNOWN"
	codeUnsupported     = "UNSUPPORTED"
	codeUnknown         = "UNKNOWN"
	codeDigestInvalid   = "DIGEST_INVALID"
)

// registryError writes an error in the distribution spec's JSON format.
func registryError(w http.ResponseWriter, status int, code, message string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Docker-Distribution-API-Version", "registry/2.0")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": message}}})
}

// composed is an image composed for a repository name.
type composed struct {
	closures []string // digests of the closures it was made from
	desc     ocispec.Descriptor
	data     []byte
}

func (s *Server) serveRegistry(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		registryError(w, http.StatusMethodNotAllowed, codeUnsupported, "this registry is read-only")
		return
	}
	rest := strings.TrimPrefix(r.URL.Path, "/v2/")
	if rest == "" {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, "{}")
		return
	}
	var name, kind, ref string
	for _, k := range []string{"/manifests/", "/blobs/", "/tags/"} {
		if i := strings.LastIndex(rest, k); i > 0 {
			name, kind, ref = rest[:i], strings.Trim(k, "/"), rest[i+len(k):]
			break
		}
	}
	if kind == "" {
		registryError(w, http.StatusNotFound, codeUnsupported, "unknown endpoint")
		return
	}
	if err := checkName(name); err != nil {
		registryError(w, http.StatusBadRequest, codeNameInvalid, err.Error())
		return
	}
	switch {
	case kind == "manifests":
		s.serveManifest(w, r, name, ref)
	case kind == "blobs":
		s.serveRegistryBlob(w, r, ref)
	case kind == "tags" && ref == "list":
		// Any valid name is an image tagged latest; whether its closures
		// exist is found out when its manifest is asked for.
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"name": name, "tags": []string{"latest"}})
	default:
		registryError(w, http.StatusNotFound, codeUnsupported, "unknown endpoint")
	}
}

func checkName(name string) error {
	if len(name) > maxNameLength {
		return fmt.Errorf("repository name longer than %d characters", maxNameLength)
	}
	parts := strings.Split(name, "/")
	if len(parts) > maxNameComponents {
		return fmt.Errorf("more than %d closures in one name", maxNameComponents)
	}
	for _, p := range parts {
		if !nameComponent.MatchString(p) {
			return fmt.Errorf("%q is not a valid repository name component", p)
		}
	}
	return nil
}

// composition is what a repository name resolves to.
type composition struct {
	closures []string
	opts     image.Options
	explicit bool // link roots given by Names
}

// composeSpec resolves a repository name into closure tags and options.
func (s *Server) composeSpec(name string) composition {
	c := composition{opts: s.opts.Registry.Image}
	for _, part := range strings.Split(name, "/") {
		ns, ok := s.opts.Registry.Names[part]
		if !ok {
			c.closures = append(c.closures, part)
			continue
		}
		c.closures = append(c.closures, ns.Closures...)
		if len(ns.LinkRoots) > 0 {
			c.opts.LinkRoots = append(c.opts.LinkRoots, ns.LinkRoots...)
			c.explicit = true
		}
		if ns.Entrypoint != nil {
			c.opts.Entrypoint = ns.Entrypoint
		}
		if ns.Cmd != nil {
			c.opts.Cmd = ns.Cmd
		}
		c.opts.Env = append(c.opts.Env, ns.Env...)
		if ns.User != "" {
			c.opts.User = ns.User
		}
		if ns.BuildpacksStack != "" {
			c.opts.BuildpacksStack = ns.BuildpacksStack
		}
	}
	slices.Sort(c.closures)
	c.closures = slices.Compact(c.closures)
	return c
}

func (s *Server) serveManifest(w http.ResponseWriter, r *http.Request, name, ref string) {
	var desc ocispec.Descriptor
	var data []byte
	if d, err := digest.Parse(ref); err == nil {
		desc, data, err = s.manifestByDigest(r.Context(), d)
		if err != nil {
			if isNotFound(err) {
				registryError(w, http.StatusNotFound, codeManifestUnknown, "no manifest "+ref)
				return
			}
			s.registryFail(w, "manifest "+ref, err)
			return
		}
	} else {
		if !spec.ValidTag(ref) {
			registryError(w, http.StatusBadRequest, codeManifestUnknown, "invalid tag "+strconv.Quote(ref))
			return
		}
		c, err := s.compose(r.Context(), name)
		if err != nil {
			if isNotFound(err) {
				registryError(w, http.StatusNotFound, codeNameUnknown, err.Error())
				return
			}
			if errors.Is(err, image.ErrOutsideClosure) {
				registryError(w, http.StatusBadRequest, codeNameInvalid, err.Error())
				return
			}
			s.registryFail(w, "composing "+name, err)
			return
		}
		desc, data = c.desc, c.data
	}
	h := w.Header()
	h.Set("Content-Type", desc.MediaType)
	h.Set("Docker-Content-Digest", desc.Digest.String())
	h.Set("ETag", `"`+desc.Digest.String()+`"`)
	h.Set("Content-Length", strconv.Itoa(len(data)))
	if r.Method == http.MethodGet {
		w.Write(data)
	}
}

// compose returns the image of a repository name, composing it if its
// closures changed since (or it was never composed).
func (s *Server) compose(ctx context.Context, name string) (*composed, error) {
	c := s.composeSpec(name)
	b, digests, err := s.closureBackend(ctx, c.closures)
	if err != nil {
		return nil, err
	}
	if cached, ok := s.composed.get(name); ok && slices.Equal(cached.closures, digests) {
		s.metrics.cache("composed", true)
		return cached, nil
	}
	s.metrics.cache("composed", false)
	v, err, _ := s.flight.Do("compose/"+name, func() (any, error) {
		// Composition may convert layers: it is not bounded by the
		// metadata timeout, and it outlives an impatient first client.
		ctx := context.WithoutCancel(ctx)
		start := time.Now()
		opts := c.opts
		if !c.explicit {
			for _, d := range digests { // the closures just resolved, even if a tag moved since
				cl, err := closureRoots(ctx, b.Target, d)
				if err != nil {
					return nil, err
				}
				opts.LinkRoots = append(opts.LinkRoots, cl...)
			}
		}
		s.log.Info("composing image", "name", name, "closures", strings.Join(c.closures, " "))
		res, err := image.BuildUnion(ctx, b.Target, c.closures, b.Target, composeTag(name), opts)
		if err != nil {
			s.metrics.add("nixoci_compositions_total", 1, "outcome", "error")
			return nil, err
		}
		s.metrics.add("nixoci_compositions_total", 1, "outcome", "ok")
		s.metrics.add("nixoci_layers_converted_total", float64(res.Converted))
		s.metrics.add("nixoci_layers_reused_total", float64(res.Reused))
		s.log.Info("composed image", "name", name, "digest", res.Manifest.Digest, "layers", len(res.Layers),
			"converted", res.Converted, "reused", res.Reused, "duration", time.Since(start).Round(time.Millisecond))
		out := &composed{closures: digests, desc: res.Manifest, data: res.ManifestData}
		s.composed.put(name, out, s.opts.CacheTTL)
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*composed), nil
}

// closureBackend returns the first backend holding every closure tag,
// with the digests the tags name there. A backend that fails (rather
// than lacking a tag) fails the lookup: the image could be composed
// from a later one and differ from what the failing one would give.
func (s *Server) closureBackend(ctx context.Context, tags []string) (Backend, []string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.BackendTimeout)
	defer cancel()
	var missing []string
	for _, b := range s.opts.Backends {
		var digests []string
		for _, tag := range tags {
			d, err := b.Target.Resolve(ctx, tag)
			if isNotFound(err) {
				missing = append(missing, fmt.Sprintf("closure %s not in %s", tag, b.Name))
				break
			}
			if err != nil {
				return Backend{}, nil, fmt.Errorf("closure %s in %s: %w", tag, b.Name, err)
			}
			digests = append(digests, d.Digest.String())
		}
		if len(digests) == len(tags) {
			return b, digests, nil
		}
	}
	return Backend{}, nil, fmt.Errorf("no backend holds all of %s (%s): %w",
		strings.Join(tags, ", "), strings.Join(missing, "; "), errdef.ErrNotFound)
}

// closureRoots returns the roots of a closure stored in t.
func closureRoots(ctx context.Context, t backend.Target, ref string) ([]string, error) {
	c, err := artifact.ReadClosure(ctx, t, ref)
	if err != nil {
		return nil, err
	}
	return c.Roots, nil
}

// composeTag is the tag a composed image is stored under.
func composeTag(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "compose." + hex.EncodeToString(sum[:])[:40]
}

// manifestByDigest finds a manifest by digest: a composed one, or one
// stored in a backend.
func (s *Server) manifestByDigest(ctx context.Context, d digest.Digest) (ocispec.Descriptor, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.BackendTimeout)
	defer cancel()
	var errs []error
	for _, b := range s.opts.Backends {
		desc, rc, err := b.Target.FetchReference(ctx, d.String())
		if isNotFound(err) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		data, err := io.ReadAll(io.LimitReader(rc, spec.MaxManifestSize+1))
		rc.Close()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if digest.FromBytes(data) != d {
			return desc, nil, fmt.Errorf("manifest %s is corrupt in %s", d, b.Name)
		}
		return desc, data, nil
	}
	if len(errs) > 0 {
		return ocispec.Descriptor{}, nil, errors.Join(errs...)
	}
	return ocispec.Descriptor{}, nil, fmt.Errorf("%s: %w", d, errdef.ErrNotFound)
}

func (s *Server) serveRegistryBlob(w http.ResponseWriter, r *http.Request, ref string) {
	d, err := digest.Parse(ref)
	if err != nil {
		registryError(w, http.StatusBadRequest, codeDigestInvalid, "invalid digest "+strconv.Quote(ref))
		return
	}
	loc, found, err := s.locateNAR(r.Context(), d)
	if err != nil {
		s.registryFail(w, "blob "+ref, err)
		return
	}
	if !found {
		registryError(w, http.StatusNotFound, codeBlobUnknown, "no blob "+ref)
		return
	}
	b := s.opts.Backends[loc.backend]
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Docker-Content-Digest", d.String())
	h.Set("ETag", `"`+d.String()+`"`)
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	if r.Method == http.MethodHead {
		h.Set("Content-Length", strconv.FormatInt(loc.desc.Size, 10))
		return
	}
	rc, err := s.fetchBlob(r.Context(), loc)
	if err != nil {
		s.registryFail(w, "blob "+ref, err)
		return
	}
	defer rc.Close()
	s.serveBlob(w, r, b.Name, loc, rc, nil)
}

func (s *Server) registryFail(w http.ResponseWriter, what string, err error) {
	status := statusOf(err)
	s.log.Error("backend failure", "what", what, "status", status, "err", err)
	registryError(w, status, codeUnknown, what+": backend failure")
}
