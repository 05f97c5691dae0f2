package artifact

import (
	"context"
	"fmt"
	"path"
	"slices"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/realisation"
	"github.com/nixoci/nixoci/spec"
)

// Realisation is the stored form of one realisation (SPEC.md section
// 12.2): an output path, the output's name, and the keys it is known by,
// each with its file in its layout: HashKey with V1 (before Nix 2.35),
// PathKey with V2 (Nix 2.35). At least one key is set.
type Realisation struct {
	OutPath string // absolute store path
	Output  string
	HashKey *realisation.HashKey
	V1      *realisation.V1
	PathKey *realisation.PathKey
	V2      *realisation.V2
}

// Tags are the artifact's tags: one per key.
func (r *Realisation) Tags() []string {
	var tags []string
	if r.HashKey != nil {
		tags = append(tags, spec.RealisationTag(r.HashKey.String()))
	}
	if r.PathKey != nil {
		tags = append(tags, spec.RealisationTag(r.PathKey.String()))
	}
	return tags
}

// Artifact is r's file artifact: annotations dev.nixoci.store-path,
// dev.nixoci.output and, for each key, dev.nixoci.drv-hash or
// dev.nixoci.drv-path; a layer per key, titled with its file, the
// pre-2.35 file first.
func (r *Realisation) Artifact() (*FileArtifact, error) {
	if r.HashKey == nil && r.PathKey == nil {
		return nil, fmt.Errorf("realisation of %s: no key", r.OutPath)
	}
	fa := &FileArtifact{Type: spec.ArtifactTypeRealisation, Annotations: map[string]string{
		spec.AnnotationStorePath: r.OutPath,
		spec.AnnotationOutput:    r.Output,
	}}
	if r.HashKey != nil {
		if r.V1 == nil {
			return nil, fmt.Errorf("realisation %s: no file", r.HashKey)
		}
		fa.Annotations[spec.AnnotationDrvHash] = r.HashKey.DrvHash
		fa.Files = append(fa.Files, BytesFile(r.HashKey.File(), spec.MediaTypeRealisation, r.V1.Marshal()))
	}
	if r.PathKey != nil {
		if r.V2 == nil {
			return nil, fmt.Errorf("realisation %s: no file", r.PathKey)
		}
		fa.Annotations[spec.AnnotationDrvPath] = path.Join(path.Dir(r.OutPath), r.PathKey.Drv)
		fa.Files = append(fa.Files, BytesFile(r.PathKey.File(), spec.MediaTypeBuildTrace, r.V2.Marshal()))
	}
	return fa, nil
}

// ReadRealisation reads back the realisation of the file artifact fa
// (found in t), checking that its files agree with its annotations.
func ReadRealisation(ctx context.Context, t backend.Target, fa *FileArtifact) (*Realisation, error) {
	outPath := fa.Annotations[spec.AnnotationStorePath]
	storeDir := path.Dir(outPath)
	r := &Realisation{OutPath: outPath, Output: fa.Annotations[spec.AnnotationOutput]}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("realisation %s: %s: %w", fa.Manifest.Digest, fmt.Sprintf(format, args...), ErrNotArtifact)
	}
	for _, f := range fa.Files {
		data, err := ReadFile(ctx, t, f, realisation.MaxSize)
		if err != nil {
			return nil, err
		}
		switch f.MediaType {
		case spec.MediaTypeRealisation:
			v, err := realisation.ParseV1(data, storeDir)
			if err != nil {
				return nil, bad("%v", err)
			}
			if v.Key.DrvHash != fa.Annotations[spec.AnnotationDrvHash] || v.Key.Output != r.Output || f.Title != v.Key.File() {
				return nil, bad("file %s does not match the annotations", f.Title)
			}
			r.HashKey, r.V1 = &v.Key, v
		case spec.MediaTypeBuildTrace:
			v, err := realisation.ParseV2(data, storeDir)
			if err != nil {
				return nil, bad("%v", err)
			}
			k, err := realisation.NewPathKey(path.Base(fa.Annotations[spec.AnnotationDrvPath]), r.Output)
			if err != nil || f.Title != k.File() {
				return nil, bad("file %s does not match the annotations", f.Title)
			}
			r.PathKey, r.V2 = &k, v
		default:
			return nil, bad("layer of media type %s", f.MediaType)
		}
	}
	if (r.V1 != nil && path.Join(storeDir, r.V1.OutPath) != outPath) || (r.V2 != nil && path.Join(storeDir, r.V2.OutPath) != outPath) || (r.V1 == nil && r.V2 == nil) {
		return nil, bad("files and annotations name different output paths")
	}
	return r, nil
}

// clone is a copy of r whose files can be signed without changing r's.
func (r *Realisation) clone() *Realisation {
	c := *r
	if r.V1 != nil {
		v := *r.V1
		v.Signatures = slices.Clone(v.Signatures)
		c.V1 = &v
	}
	if r.V2 != nil {
		v := *r.V2
		v.Signatures = slices.Clone(v.Signatures)
		c.V2 = &v
	}
	return &c
}

// MergeRealisations is old with the keys and signatures of new (same
// output path) added.
func MergeRealisations(old, new *Realisation) *Realisation {
	m := old.clone()
	if new.V1 != nil {
		if m.V1 == nil {
			m.HashKey, m.V1 = new.HashKey, new.V1
		} else if *m.HashKey == *new.HashKey {
			m.V1.Signatures = append(m.V1.Signatures, new.V1.Signatures...)
		}
	}
	if new.V2 != nil {
		if m.V2 == nil {
			m.PathKey, m.V2 = new.PathKey, new.V2
		} else if *m.PathKey == *new.PathKey {
			m.V2.Signatures = append(m.V2.Signatures, new.V2.Signatures...)
		}
	}
	return m
}
