package image

// This file: the image's users, platform, runtime configuration and
// manifest.

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// imageUsers are the users /etc/passwd lists besides root, and the
// user the image runs as ("" for root): the Buildpacks user "cnb" (with
// --user's ids, or its kind's default), else the --user, "user".
func imageUsers(opts Options) ([]User, string, error) {
	if opts.BuildpacksStack != "" {
		uid, gid, err := buildpacksUserIDs(opts)
		if err != nil {
			return nil, "", err
		}
		ids := strconv.Itoa(uid) + ":" + strconv.Itoa(gid)
		if uid == 0 {
			return nil, ids, nil
		}
		return []User{{Name: buildpacksUser, UID: uid, GID: gid, Home: "/home/" + buildpacksUser}}, ids, nil
	}
	if opts.User == "" {
		return nil, "", nil
	}
	uid, gid, err := parseUser(opts.User)
	if err != nil || uid == 0 {
		return nil, opts.User, err
	}
	return []User{{Name: "user", UID: uid, GID: gid, Home: "/home/user"}}, opts.User, nil
}

// parseUser parses "UID:GID", both numbers.
func parseUser(s string) (uid, gid int, err error) {
	u, g, ok := strings.Cut(s, ":")
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if !ok || err1 != nil || err2 != nil || uid < 0 || gid < 0 {
		return 0, 0, &OptionError{"User", strconv.Quote(s), "want UID:GID, both numbers"}
	}
	return uid, gid, nil
}

// checkInImage fails unless p is in a store path of the closure or made
// by the root layer.
func checkInImage(p string, paths []artifact.PathArtifact, root rootFS) error {
	if !path.IsAbs(p) {
		return nil // resolved through PATH at run time
	}
	clean := path.Clean(p)
	for _, a := range paths {
		if clean == a.Info.StorePath || strings.HasPrefix(clean, a.Info.StorePath+"/") {
			return nil
		}
	}
	if root.has(clean) {
		return nil
	}
	return fmt.Errorf("%s: %w", p, ErrOutsideClosure)
}

// imageConfig is the runtime configuration; it has a creation time only
// if Options.Created gives one.
func imageConfig(opts Options, pl ocispec.Platform, c *artifact.Closure, root plannedRoot) ocispec.Image {
	env := slices.Clone(opts.Env)
	hasPath := slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, "PATH=") })
	if !hasPath {
		dirs := slices.Compact(append(slices.Sorted(slices.Values(root.pathEnv)), "/usr/bin"))
		for _, lr := range root.linkRoots {
			dirs = append(dirs, lr+"/bin")
		}
		env = append([]string{"PATH=" + strings.Join(dirs, ":")}, env...)
	}
	labels := map[string]string{spec.AnnotationClosure: strings.Join(c.Roots, " ")}
	for k, v := range opts.Labels {
		labels[k] = v
	}
	if opts.BuildpacksStack != "" {
		uid, gid, _ := parseUser(root.user) // checked by imageUsers
		env = buildpacksConfig(opts, uid, gid, c.Roots, env, labels)
	}
	cfg := ocispec.Image{
		Platform: pl,
		Config: ocispec.ImageConfig{
			User: root.user, Env: env, Entrypoint: opts.Entrypoint, Cmd: root.cmd,
			WorkingDir: opts.WorkingDir, Labels: labels,
		},
		RootFS: ocispec.RootFS{Type: "layers"},
	}
	if !opts.Created.IsZero() {
		t := opts.Created.UTC()
		cfg.Created = &t
	}
	return cfg
}

// storeImage writes the config and returns the manifest, which the
// caller stores (tagged, or listed by an index).
func storeImage(ctx context.Context, dst backend.Target, cfg ocispec.Image, layers []Layer, c *artifact.Closure) (manifest, ocispec.Descriptor, error) {
	cfg.RootFS.DiffIDs, cfg.History = nil, nil
	var descs []ocispec.Descriptor
	for _, l := range layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.DiffID)
		cfg.History = append(cfg.History, ocispec.History{Created: cfg.Created, CreatedBy: l.createdBy()})
		descs = append(descs, l.Descriptor)
	}
	cfgData, err := json.Marshal(cfg)
	if err != nil {
		return manifest{}, ocispec.Descriptor{}, err
	}
	cfgDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfgData), Size: int64(len(cfgData))}
	if err := backend.PushBytes(ctx, dst, cfgDesc, cfgData); err != nil {
		return manifest{}, cfgDesc, err
	}
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    cfgDesc,
		Layers:    descs,
		Annotations: map[string]string{
			spec.AnnotationVersion: spec.Version,
			spec.AnnotationClosure: strings.Join(c.Digests, " "),
		},
	}
	data, err := json.Marshal(m)
	if err != nil {
		return manifest{}, cfgDesc, err
	}
	if len(data) > spec.MaxManifestSize {
		return manifest{}, cfgDesc, fmt.Errorf("%w: %d bytes for %d layers, over %d", ErrManifestTooLarge, len(data), len(layers), spec.MaxManifestSize)
	}
	return newManifest(ocispec.MediaTypeImageManifest, data), cfgDesc, nil
}
