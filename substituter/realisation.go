package substituter

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strings"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/realisation"
	"github.com/nixoci/nixoci/spec"
)

// Realisations (SPEC.md section 12.2): one stored form, a realisation
// artifact tagged once per key it is known by, answers both layouts.
// A request in one layout is answered from the file of that layout; an
// artifact known by both keys has both files.

// serveRealisation answers `GET /realisations/<sha256:hex>!<output>.doi`
// (Nix before 2.35).
func (s *Server) serveRealisation(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutSuffix(r.PathValue("file"), ".doi")
	key, err := realisation.ParseHashKey(id)
	if !ok || err != nil {
		http.Error(w, "malformed realisation name: want realisations/sha256:<hex>!<output>.doi", http.StatusBadRequest)
		return
	}
	rl, err := s.findRealisation(r.Context(), key.String())
	if err != nil {
		s.fail(w, r, "realisation "+key.String(), err)
		return
	}
	if rl == nil || rl.HashKey == nil || *rl.HashKey != key {
		http.Error(w, "no realisation "+key.String(), http.StatusNotFound)
		return
	}
	v := *rl.V1
	v.Signatures = slices.Clone(v.Signatures)
	for _, k := range s.resolver.policy.keysFor(v.Verified) {
		if err := v.Sign(k); err != nil {
			s.fail(w, r, "signing realisation "+key.String(), err)
			return
		}
	}
	s.sendBytes(w, r, v.Marshal(), "application/json")
}

// serveBuildTrace answers `GET /build-trace-v2/<drv>/<output>.doi` (Nix
// 2.35).
func (s *Server) serveBuildTrace(w http.ResponseWriter, r *http.Request) {
	out, ok := strings.CutSuffix(r.PathValue("file"), ".doi")
	key, err := realisation.NewPathKey(r.PathValue("drv"), out)
	if !ok || err != nil {
		http.Error(w, "malformed build trace name: want build-trace-v2/<derivation base name>/<output>.doi", http.StatusBadRequest)
		return
	}
	rl, err := s.findRealisation(r.Context(), key.String())
	if err != nil {
		s.fail(w, r, "build trace "+key.String(), err)
		return
	}
	if rl == nil || rl.PathKey == nil || *rl.PathKey != key {
		http.Error(w, "no build trace entry "+key.String(), http.StatusNotFound)
		return
	}
	v := *rl.V2
	v.Signatures = slices.Clone(v.Signatures)
	verified := func(keys []narinfo.PublicKey) bool { return v.Verified(key, keys) }
	for _, k := range s.resolver.policy.keysFor(verified) {
		if err := v.Sign(key, k); err != nil {
			s.fail(w, r, "signing build trace "+key.String(), err)
			return
		}
	}
	s.sendBytes(w, r, v.Marshal(), "application/json")
}

// findRealisation reads the realisation known by key from the backends:
// nil if none has it.
func (s *Server) findRealisation(ctx context.Context, key string) (*artifact.Realisation, error) {
	e, err := s.findFile(ctx, spec.RealisationTag(key), spec.ArtifactTypeRealisation)
	if err != nil || e == nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.backends.Timeout())
	defer cancel()
	return artifact.ReadRealisation(ctx, s.backends.List()[e.backend].Target, e.fa)
}

// putRealisation stores `PUT /realisations/<id>.doi`.
func (u *uploader) putRealisation(r *http.Request) (int, error) {
	id, _ := strings.CutSuffix(r.PathValue("file"), ".doi")
	key, err := realisation.ParseHashKey(id)
	if err != nil {
		return http.StatusBadRequest, err
	}
	data, status, err := readUploadBody(r, realisation.MaxSize)
	if err != nil {
		return status, err
	}
	v, err := realisation.ParseV1(data, u.s.opts.StoreDir)
	if err != nil {
		return http.StatusBadRequest, fmt.Errorf("%s: %w", key.File(), err)
	}
	if v.Key != key {
		return http.StatusBadRequest, fmt.Errorf("%s holds the realisation of %s", key.File(), v.Key)
	}
	return u.storeRealisation(r.Context(), key.String(), &artifact.Realisation{
		OutPath: path.Join(u.s.opts.StoreDir, v.OutPath), Output: key.Output, HashKey: &key, V1: v,
	})
}

// putBuildTrace stores `PUT /build-trace-v2/<drv>/<output>.doi`.
func (u *uploader) putBuildTrace(r *http.Request) (int, error) {
	out, _ := strings.CutSuffix(r.PathValue("file"), ".doi")
	key, err := realisation.NewPathKey(r.PathValue("drv"), out)
	if err != nil {
		return http.StatusBadRequest, err
	}
	data, status, err := readUploadBody(r, realisation.MaxSize)
	if err != nil {
		return status, err
	}
	v, err := realisation.ParseV2(data, u.s.opts.StoreDir)
	if err != nil {
		return http.StatusBadRequest, fmt.Errorf("%s: %w", key.File(), err)
	}
	return u.storeRealisation(r.Context(), key.String(), &artifact.Realisation{
		OutPath: path.Join(u.s.opts.StoreDir, v.OutPath), Output: key.Output, PathKey: &key, V2: v,
	})
}

// storeRealisation stores rl, uploaded under key, once its output path
// is in the cache (a realisation must never point at a path nobody can
// substitute). A realisation stored before under the same key is kept
// with rl's signatures added; one naming another output path is a
// conflict.
func (u *uploader) storeRealisation(ctx context.Context, key string, rl *artifact.Realisation) (int, error) {
	e, err := u.s.lookup(ctx, spec.PathTag(rl.OutPath))
	if err != nil {
		return statusOf(err), fmt.Errorf("realisation %s: looking up %s: %w", key, rl.OutPath, err)
	}
	if e == nil || e.Artifact.Info.StorePath != rl.OutPath {
		return http.StatusBadRequest, fmt.Errorf("realisation %s: output path %s has not been uploaded", key, rl.OutPath)
	}
	if rl.PathKey == nil && e.Artifact.Info.Deriver != "" {
		// The key Nix 2.35 asks for: the derivation the output was built
		// from, as its narinfo records it (SPEC.md section 12.2).
		if pk, err := realisation.NewPathKey(e.Artifact.Info.Deriver, rl.Output); err == nil {
			rl.PathKey, rl.V2 = &pk, &realisation.V2{OutPath: path.Base(rl.OutPath)}
		}
	}
	dst := u.s.backends.List()[0].Target
	fa, err := artifact.FetchFileArtifact(ctx, dst, spec.RealisationTag(key), spec.ArtifactTypeRealisation)
	switch {
	case err == nil:
		old, err := artifact.ReadRealisation(ctx, dst, fa)
		if err != nil {
			return statusOf(err), err
		}
		if old.OutPath != rl.OutPath {
			return http.StatusConflict, fmt.Errorf("realisation %s is stored with output %s; refusing to replace it with %s", key, old.OutPath, rl.OutPath)
		}
		rl = artifact.MergeRealisations(old, rl)
	case !isNotFound(err) && !errors.Is(err, artifact.ErrNotArtifact):
		return statusOf(err), err
	}
	// Received through an authenticated upload: the server vouches for
	// it, and says so in the stored artifact (see trustPolicy).
	for _, k := range u.s.resolver.policy.sign {
		if rl.V1 != nil {
			v := *rl.V1
			v.Signatures = slices.Clone(v.Signatures)
			if err := v.Sign(k); err != nil {
				return http.StatusInternalServerError, err
			}
			rl.V1 = &v
		}
		if rl.V2 != nil {
			v := *rl.V2
			v.Signatures = slices.Clone(v.Signatures)
			if err := v.Sign(*rl.PathKey, k); err != nil {
				return http.StatusInternalServerError, err
			}
			rl.V2 = &v
		}
	}
	fa, err = rl.Artifact()
	if err != nil {
		return http.StatusBadRequest, err
	}
	return u.storeFile(ctx, fa, rl.Tags()...)
}
