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

// imageUsers are the users /etc/passwd lists besides root.
func imageUsers(opts Options) ([]User, error) {
	var users []User
	if opts.BuildpacksStack != "" {
		users = append(users, User{Name: "cnb", UID: 1000, GID: 1000, Home: "/home/cnb"})
	}
	if opts.User != "" {
		uid, gid, ok := strings.Cut(opts.User, ":")
		u, err1 := strconv.Atoi(uid)
		g, err2 := strconv.Atoi(gid)
		if !ok || err1 != nil || err2 != nil || u < 0 || g < 0 {
			return nil, &OptionError{"User", strconv.Quote(opts.User), "want UID:GID, both numbers"}
		}
		if u != 0 && !(opts.BuildpacksStack != "" && u == 1000) {
			users = append(users, User{Name: "user", UID: u, GID: g, Home: "/tmp"})
		}
	}
	return users, nil
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

// imageConfig is the runtime configuration; it has no creation time.
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
	user := opts.User
	if opts.BuildpacksStack != "" {
		labels["io.buildpacks.stack.id"] = opts.BuildpacksStack
		env = append(env, "CNB_USER_ID=1000", "CNB_GROUP_ID=1000")
		if user == "" {
			user = "1000:1000"
		}
	}
	return ocispec.Image{
		Platform: pl,
		Config: ocispec.ImageConfig{
			User: user, Env: env, Entrypoint: opts.Entrypoint, Cmd: root.cmd,
			WorkingDir: opts.WorkingDir, Labels: labels,
		},
		RootFS: ocispec.RootFS{Type: "layers"},
	}
}

// storeImage writes the config and returns the manifest, which the
// caller stores (tagged, or listed by an index).
func storeImage(ctx context.Context, dst backend.Target, cfg ocispec.Image, layers []Layer, c *artifact.Closure) (manifest, ocispec.Descriptor, error) {
	cfg.RootFS.DiffIDs = nil
	var descs []ocispec.Descriptor
	for _, l := range layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.DiffID)
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
