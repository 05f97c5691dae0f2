package source

import (
	"context"
	"encoding/hex"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/nar"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/realisation"
	"github.com/nixoci/nixoci/spec"
)

var _ artifact.FileSource = (*BinaryCache)(nil)

// MaxCacheDirEntries bounds the entries Files reads from one directory
// of a file:// cache (realisations/, build-trace-v2/, debuginfo/): a
// larger directory is skipped with a warning.
const MaxCacheDirEntries = 200_000

// Files returns what a file:// cache holds of the closure beside its
// NARs and narinfos, where `nix copy --to file://` and `nix store
// copy-log --to file://` write it (SPEC.md section 12.6): each path's
// listing (<hash>.ls), the build logs of its derivers (log/<drv>), the
// realisations naming its paths (realisations/*.doi,
// build-trace-v2/<drv>/<output>.doi) and the debug-info entries whose
// archive is one of its NARs (debuginfo/*). Each is checked as serve
// checks an upload; one that fails is skipped with a warning. An
// http(s) cache has none to offer: realisations and debug-info entries
// cannot be listed over HTTP.
func (c *BinaryCache) Files(_ context.Context, infos []*narinfo.NarInfo) ([]artifact.ClosureFile, error) {
	if c.base.Scheme != "file" || len(infos) == 0 {
		return nil, nil
	}
	dir := filepath.FromSlash(c.base.Path)
	sorted := slices.Clone(infos)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].StorePath < sorted[j].StorePath })
	storeDir := path.Dir(sorted[0].StorePath)
	byBase := map[string]string{} // output base name -> store path
	byNAR := map[string]string{}  // NAR digest "sha256:<hex>" -> store path
	var files []artifact.ClosureFile
	skip := func(what string, err error) {
		slog.Warn("a file of the binary cache is not pushed", "file", what, "err", err)
	}
	logs := map[string]bool{}
	for _, info := range sorted {
		byBase[path.Base(info.StorePath)] = info.StorePath
		if raw, err := nixbase32.DecodeString(strings.TrimPrefix(info.FileHash, "sha256:")); err == nil {
			byNAR["sha256:"+hex.EncodeToString(raw)] = info.StorePath
		}
		hash := spec.PathTag(info.StorePath)
		if data, err := readBounded(filepath.Join(dir, hash+".ls"), nar.MaxListingSize); err == nil {
			if fa, err := artifact.NewListingArtifact(hash, data); err == nil {
				files = append(files, artifact.ClosureFile{StorePath: info.StorePath, Artifact: fa})
			} else {
				skip(hash+".ls", err)
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			skip(hash+".ls", err)
		}
		if d := info.Deriver; d != "" && !logs[d] && realisation.CheckDrvName(d) == nil {
			logs[d] = true
			f, err := decodedFile(filepath.Join(dir, "log", d), "", "log/"+d, spec.MediaTypeLog, spec.MaxLogSize)
			if err == nil {
				files = append(files, artifact.ClosureFile{StorePath: info.StorePath, Artifact: artifact.NewLogArtifact(storeDir+"/"+d, f)})
			} else if !errors.Is(err, fs.ErrNotExist) {
				skip("log/"+d, err)
			}
		}
	}
	for _, name := range dirEntries(filepath.Join(dir, "realisations"), skip) {
		data, err := readBounded(filepath.Join(dir, "realisations", name), realisation.MaxSize)
		if err != nil {
			skip("realisations/"+name, err)
			continue
		}
		v, err := realisation.ParseV1(data, storeDir)
		if err != nil || v.Key.File() != "realisations/"+name {
			skip("realisations/"+name, errors.Join(err, errors.New("not the realisation its name says")))
			continue
		}
		if out, ok := byBase[v.OutPath]; ok {
			files = append(files, artifact.ClosureFile{StorePath: out,
				Realisation: &artifact.Realisation{OutPath: out, Output: v.Key.Output, HashKey: &v.Key, V1: v}})
		}
	}
	for _, drv := range dirEntries(filepath.Join(dir, "build-trace-v2"), skip) {
		for _, name := range dirEntries(filepath.Join(dir, "build-trace-v2", drv), skip) {
			what := "build-trace-v2/" + drv + "/" + name
			output, ok := strings.CutSuffix(name, ".doi")
			key, err := realisation.NewPathKey(drv, output)
			if !ok || err != nil {
				skip(what, errors.Join(err, errors.New("not <drv>/<output>.doi")))
				continue
			}
			data, err := readBounded(filepath.Join(dir, filepath.FromSlash(what)), realisation.MaxSize)
			if err != nil {
				skip(what, err)
				continue
			}
			v, err := realisation.ParseV2(data, storeDir)
			if err != nil {
				skip(what, err)
				continue
			}
			if out, ok := byBase[v.OutPath]; ok {
				files = append(files, artifact.ClosureFile{StorePath: out,
					Realisation: &artifact.Realisation{OutPath: out, Output: output, PathKey: &key, V2: v}})
			}
		}
	}
	for _, name := range dirEntries(filepath.Join(dir, "debuginfo"), skip) {
		if !artifact.DebugInfoName.MatchString(name) {
			continue
		}
		data, err := readBounded(filepath.Join(dir, "debuginfo", name), artifact.MaxDebugInfoSize)
		if err != nil {
			skip("debuginfo/"+name, err)
			continue
		}
		fa, err := artifact.NewDebugInfoArtifact(name, data)
		if err != nil {
			skip("debuginfo/"+name, err)
			continue
		}
		if out, ok := byNAR[fa.Annotations[spec.AnnotationArchive]]; ok {
			files = append(files, artifact.ClosureFile{StorePath: out, Artifact: fa})
		}
	}
	return files, nil
}

// dirEntries lists the names in dir, sorted; none if it does not exist
// or holds more than MaxCacheDirEntries (with a warning).
func dirEntries(dir string, skip func(string, error)) []string {
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		skip(dir, err)
		return nil
	}
	defer f.Close()
	names, err := f.Readdirnames(MaxCacheDirEntries + 1)
	if err != nil && len(names) == 0 {
		return nil
	}
	if len(names) > MaxCacheDirEntries {
		skip(dir, errors.New("more entries than nixoci reads from one directory of a binary cache"))
		return nil
	}
	slices.Sort(names)
	return names
}
