package image

// This file: storing the images of a build and what its tags name: one
// image manifest, or an image index over the platforms' manifests
// (SPEC.md section 8.5).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/spec"
)

// snapshotterSuffix is added to the tag of the nix-snapshotter form.
const snapshotterSuffix = "-nix"

// manifest is a manifest or index not yet stored.
type manifest struct {
	desc ocispec.Descriptor
	data []byte
}

func newManifest(mediaType string, data []byte) manifest {
	return manifest{ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}, data}
}

// storedImage is one platform's image whose blobs are stored, with its
// manifests, which tagImages stores.
type storedImage struct {
	Image
	manifest, snapshotter manifest
	closureDigests        []string
}

// storeImages stores the root layer and config of p's image and, if
// asked, its nix-snapshotter layer, and returns the image with its
// manifests.
func storeImages(ctx context.Context, dst backend.Target, p *plan, cfg ocispec.Image, root rootFS, layers []Layer, opts Options) (storedImage, error) {
	img := storedImage{
		Image:          Image{Platform: p.platform, System: p.system},
		closureDigests: p.closure.Digests,
	}
	for _, r := range p.reads {
		img.Closures = append(img.Closures, r.ref)
	}
	rootLayer, err := storeRootLayer(ctx, dst, root, opts.Compression)
	if err != nil {
		return img, err
	}
	img.Layers = append(layers, rootLayer)
	if img.manifest, img.Config, err = storeImage(ctx, dst, cfg, img.Layers, p.closure); err != nil {
		return img, err
	}
	img.Manifest = img.manifest.desc
	if !opts.NixSnapshotter {
		return img, nil
	}
	nixLayer, err := storeSnapshotterLayer(ctx, dst, layers, p.paths)
	if err != nil {
		return img, err
	}
	if img.snapshotter, _, err = storeImage(ctx, dst, cfg, []Layer{nixLayer, rootLayer}, p.closure); err != nil {
		return img, err
	}
	img.Snapshotter = &img.snapshotter.desc
	return img, nil
}

// tagImages stores the manifests and tags them, or with several
// platforms stores an index over them and tags that; the nix-snapshotter
// form follows, tagged "<tag>-nix". It records what the tags name in res.
func tagImages(ctx context.Context, dst backend.Target, res *Result, images []storedImage, opts Options) error {
	top, err := tagOne(ctx, dst, res.Tag, images, func(i storedImage) manifest { return i.manifest })
	if err != nil {
		return err
	}
	res.Manifest, res.ManifestData = top.desc, top.data
	if !opts.NixSnapshotter {
		return nil
	}
	if res.Tag != "" {
		res.SnapshotterTag = res.Tag + snapshotterSuffix
	}
	nix, err := tagOne(ctx, dst, res.SnapshotterTag, images, func(i storedImage) manifest { return i.snapshotter })
	if err != nil {
		return err
	}
	res.Snapshotter = &nix.desc
	return nil
}

// tagOne tags the manifest of the one image, or stores the manifests of
// several and tags an index over them; with tag "" it stores the top
// manifest untagged.
func tagOne(ctx context.Context, dst backend.Target, tag string, images []storedImage, which func(storedImage) manifest) (manifest, error) {
	store := func(m manifest) error {
		if tag == "" {
			return backend.PushBytes(ctx, dst, m.desc, m.data)
		}
		return dst.PushReference(ctx, m.desc, bytes.NewReader(m.data), tag)
	}
	if len(images) == 1 {
		m := which(images[0])
		return m, store(m)
	}
	for _, img := range images {
		m := which(img)
		if err := backend.PushBytes(ctx, dst, m.desc, m.data); err != nil {
			return manifest{}, fmt.Errorf("image manifest for %s: %w", spec.PlatformString(img.Platform), err)
		}
	}
	idx, err := imageIndex(images, which)
	if err != nil {
		return manifest{}, err
	}
	return idx, store(idx)
}

// imageIndex is the index over the images' manifests (as which picks
// them), in the images' order (by platform), each with its platform;
// annotated with the closures of all.
func imageIndex(images []storedImage, which func(storedImage) manifest) (manifest, error) {
	idx := ocispec.Index{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   ocispec.MediaTypeImageIndex,
		Annotations: map[string]string{spec.AnnotationVersion: spec.Version},
	}
	var closures []string
	for _, img := range images {
		d := which(img).desc
		platform := img.Platform
		d.Platform = &platform
		idx.Manifests = append(idx.Manifests, d)
		closures = append(closures, img.closureDigests...)
	}
	idx.Annotations[spec.AnnotationClosure] = strings.Join(closures, " ")
	data, err := json.Marshal(idx)
	if err != nil {
		return manifest{}, err
	}
	return newManifest(ocispec.MediaTypeImageIndex, data), nil
}
