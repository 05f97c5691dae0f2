package artifact

import (
	"bytes"
	"context"
	"fmt"
	"sort"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/nixoci/nixoci/backend"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// PathSummary is what Inspect reports of one store path.
type PathSummary struct {
	StorePath   string   `json:"storePath"`
	NarHash     string   `json:"narHash"`
	NarSize     uint64   `json:"narSize"`
	FileSize    uint64   `json:"fileSize"`
	Compression string   `json:"compression"`
	URL         string   `json:"url"`
	References  []string `json:"references"`
	Deriver     string   `json:"deriver,omitempty"`
	System      string   `json:"system,omitempty"`
	Sigs        []string `json:"signatures"`
	CA          string   `json:"ca,omitempty"`
}

// ClosureSummary is what Inspect reports of a closure.
type ClosureSummary struct {
	Reference    string        `json:"reference"`
	Digest       string        `json:"digest"`
	MediaType    string        `json:"mediaType"`
	Parts        int           `json:"parts"`
	Roots        []string      `json:"roots"`
	Paths        []PathSummary `json:"paths"`
	NarSize      uint64        `json:"narSize"`
	FileSize     uint64        `json:"fileSize"`
	ManifestSize int64         `json:"manifestSize"`
	// Files are the realisations, build logs, listings and debug-info
	// entries the closure lists (SPEC.md section 12.6).
	Files []FileSummary `json:"files,omitempty"`
}

// FileSummary is what Inspect reports of one file artifact a closure
// lists.
type FileSummary struct {
	Kind      string      `json:"kind"` // "realisation", "log", "listing" or "debuginfo"
	StorePath string      `json:"storePath"`
	Digest    string      `json:"digest"`
	Files     []NamedFile `json:"files"`
}

// NamedFile is one binary-cache file: its name in a binary cache and size.
type NamedFile struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// FileKind names the kind of a file artifact type: "realisation",
// "log", "listing" or "debuginfo".
func FileKind(artifactType string) string {
	switch artifactType {
	case spec.ArtifactTypeRealisation:
		return "realisation"
	case spec.ArtifactTypeLog:
		return "log"
	case spec.ArtifactTypeListing:
		return "listing"
	case spec.ArtifactTypeDebugInfo:
		return "debuginfo"
	}
	return artifactType
}

// Inspect reads the closure reference names and the narinfo of each path,
// jobs at once (backend.DefaultJobs() if 0). A reference that is the hash
// part of a store path names that path's tag (as pulled through from an
// upstream or uploaded to serve, without a closure): its summary is that
// one path, its own root.
func Inspect(ctx context.Context, t backend.Target, reference string, jobs int) (*ClosureSummary, error) {
	if spec.IsHashPart(reference) {
		a, err := FetchPathByHash(ctx, t, reference)
		if err != nil {
			return nil, err
		}
		return summarise(reference, a.Manifest, 0, []string{a.Info.StorePath}, []*narinfo.NarInfo{a.Info}), nil
	}
	c, err := ReadClosure(ctx, t, reference)
	if err != nil {
		return nil, err
	}
	if jobs <= 0 {
		jobs = backend.DefaultJobs()
	}
	var infos []*narinfo.NarInfo
	if c.Version == spec.ClosureV2 {
		arts, err := ClosurePaths(ctx, t, c, jobs)
		if err != nil {
			return nil, err
		}
		for _, a := range arts {
			infos = append(infos, a.Info)
		}
	} else if infos, err = closureNarInfos(ctx, t, c, jobs); err != nil {
		return nil, err
	}
	s := summarise(reference, c.Descriptor, c.Parts, c.Roots, infos)
	files, err := ClosureFiles(ctx, t, c, jobs)
	if err != nil {
		return nil, err
	}
	for _, cf := range files {
		fs := FileSummary{Kind: FileKind(cf.Artifact.Type), StorePath: cf.StorePath, Digest: cf.Artifact.Manifest.Digest.String()}
		for _, f := range cf.Artifact.Files {
			fs.Files = append(fs.Files, NamedFile{Name: f.Title, Size: f.Size})
		}
		s.Files = append(s.Files, fs)
	}
	return s, nil
}

// summarise makes the summary of the artifact desc (a closure of parts
// parts, or a path) with roots and the narinfos of its paths.
func summarise(reference string, desc ocispec.Descriptor, parts int, roots []string, infos []*narinfo.NarInfo) *ClosureSummary {
	paths := make([]PathSummary, len(infos))
	for i, info := range infos {
		paths[i] = PathSummary{
			StorePath: info.StorePath, NarHash: info.NarHash, NarSize: info.NarSize,
			FileSize: info.FileSize, Compression: info.Compression, URL: info.URL,
			References: info.References, Deriver: info.Deriver, System: info.System, Sigs: info.Sigs, CA: info.CA,
		}
		if paths[i].Sigs == nil {
			paths[i].Sigs = []string{}
		}
	}
	sort.Slice(paths, func(i, j int) bool { return paths[i].StorePath < paths[j].StorePath })
	s := &ClosureSummary{
		Reference: reference, Digest: desc.Digest.String(), MediaType: desc.MediaType,
		Parts: parts, Roots: roots, Paths: paths, ManifestSize: desc.Size,
	}
	for _, p := range paths {
		s.NarSize += p.NarSize
		s.FileSize += p.FileSize
	}
	return s
}

// closureNarInfos fetches the narinfo layers of a version 1 closure.
func closureNarInfos(ctx context.Context, t backend.Target, c *Closure, jobs int) ([]*narinfo.NarInfo, error) {
	var narinfos []ocispec.Descriptor
	for _, l := range c.Layers {
		if l.MediaType == spec.MediaTypeNarInfo {
			narinfos = append(narinfos, l)
		}
	}
	infos := make([]*narinfo.NarInfo, len(narinfos))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	for i, d := range narinfos {
		g.Go(func() (err error) {
			infos[i], err = fetchNarInfo(gctx, t, d)
			return err
		})
	}
	return infos, g.Wait()
}

// fetchNarInfo fetches, verifies and parses a narinfo blob.
func fetchNarInfo(ctx context.Context, t backend.Target, d ocispec.Descriptor) (*narinfo.NarInfo, error) {
	data, err := backend.FetchAll(ctx, t, d, narinfo.MaxSize)
	if err != nil {
		return nil, fmt.Errorf("narinfo %s: %w", d.Digest, err)
	}
	info, err := narinfo.Parse(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("narinfo %s (%s): %w", d.Annotations[spec.AnnotationTitle], d.Digest, err)
	}
	return info, nil
}
