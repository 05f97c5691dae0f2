package source

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/nixoci/nixoci/artifact"
	"github.com/nixoci/nixoci/codec"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/realisation"
	"github.com/nixoci/nixoci/spec"
)

var _ artifact.FileSource = (*LocalStore)(nil)

// Files returns the realisations of the closure's content-addressed
// derivation outputs and, if s.Logs, the build logs of the closure's
// derivers that the local store keeps (SPEC.md section 12.6).
func (s *LocalStore) Files(ctx context.Context, infos []*narinfo.NarInfo) ([]artifact.ClosureFile, error) {
	files, err := s.realisations(ctx, infos)
	if err != nil {
		return nil, err
	}
	if s.Logs {
		files = append(files, s.buildLogs(infos)...)
	}
	return files, nil
}

// realisations asks `nix realisation info --json` (a stable command
// since Nix 2.4, in whichever JSON shape the installed version prints)
// for the derivers of the closure's content-addressed paths: the
// derivations those outputs were built from, which Nix records resolved
// (their inputs replaced by input paths). Each realisation naming a path
// of the closure is kept under both keys where both are known: the hash
// modulo of the deriver (the key before Nix 2.35), computed here, and
// the deriver itself (the 2.35 key). Nothing is built or substituted to
// answer (--max-jobs 0, no substituters, no remote builders); a deriver
// Nix cannot answer for is skipped with a warning.
func (s *LocalStore) realisations(ctx context.Context, infos []*narinfo.NarInfo) ([]artifact.ClosureFile, error) {
	dir := s.storeDir()
	byPath := make(map[string]*narinfo.NarInfo, len(infos))
	var derivers []string
	for _, info := range infos {
		byPath[info.StorePath] = info
		// Outputs of content-addressed derivations carry a content
		// address and a deriver; paths added to the store (CA, no
		// deriver) and input-addressed outputs have no realisation to
		// read.
		if info.CA == "" || info.Deriver == "" || strings.HasPrefix(info.CA, "text:") {
			continue
		}
		drv := dir + "/" + info.Deriver
		if _, err := os.Stat(drv); err == nil {
			derivers = append(derivers, drv)
		}
	}
	slices.Sort(derivers)
	derivers = slices.Compact(derivers)
	if len(derivers) == 0 {
		return nil, nil
	}
	modulo := map[string]string{} // hash modulo -> deriver
	read := func(p string) ([]byte, error) { return readBounded(p, spec.MaxDerivationSize) }
	for _, d := range derivers {
		if h, err := realisation.HashModulo(d, read); err == nil {
			modulo[h] = d
		} else {
			slog.Warn("cannot compute the hash modulo of a derivation; its realisations are stored under its 2.35 key only", "drv", d, "err", err)
		}
	}
	var entries []json.RawMessage
	for batch := range slices.Chunk(derivers, 500) {
		got, err := s.realisationInfo(ctx, batch)
		if err != nil && len(batch) > 1 {
			// One deriver Nix cannot answer for fails the whole call:
			// ask for each alone.
			got, err = nil, nil
			for _, d := range batch {
				one, err := s.realisationInfo(ctx, []string{d})
				if err != nil {
					slog.Warn("cannot read the realisations of a derivation; the closure is pushed without them", "drv", d, "err", err)
					continue
				}
				got = append(got, one...)
			}
		} else if err != nil {
			slog.Warn("cannot read the realisations of a derivation; the closure is pushed without them", "drv", batch[0], "err", err)
		}
		entries = append(entries, got...)
	}
	var files []artifact.ClosureFile
	seen := map[string]bool{}
	for _, raw := range entries {
		rl, err := parseRealisationInfo(raw, dir, modulo, read)
		if err != nil {
			slog.Warn("cannot read a realisation printed by nix realisation info; it is not pushed", "err", err)
			continue
		}
		if rl == nil || byPath[rl.OutPath] == nil || seen[strings.Join(rl.Tags(), " ")] {
			continue
		}
		seen[strings.Join(rl.Tags(), " ")] = true
		files = append(files, artifact.ClosureFile{StorePath: rl.OutPath, Realisation: rl})
	}
	return files, nil
}

// realisationInfo runs `nix realisation info --json` on derivations and
// returns its entries.
func (s *LocalStore) realisationInfo(ctx context.Context, drvs []string) ([]json.RawMessage, error) {
	args := append([]string{"realisation", "info", "--extra-experimental-features", "nix-command ca-derivations", "--json",
		"--max-jobs", "0", "--option", "substitute", "false", "--option", "builders", ""}, drvs...)
	out, err := s.run(ctx, s.nix(), args...)
	if err != nil {
		return nil, err
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(out, &entries); err != nil {
		return nil, fmt.Errorf("nix realisation info --json: %w", err)
	}
	return entries, nil
}

// parseRealisationInfo reads one entry of `nix realisation info --json`:
// Nix 2.8 to 2.34 print a realisation file's JSON ({"id":
// "sha256:<hex>!<output>", "outPath", "signatures",
// "dependentRealisations"}); a key naming the derivation instead
// ("<drv>^<output>" as id, or {"key": {"drvPath", "outputName"}, "value":
// {…}}) is read as the 2.35 layout. An entry for a path that is not a
// realisation ({"opaquePath"}) gives nil. modulo maps the hash modulo of
// each deriver asked for to it; read reads derivations.
func parseRealisationInfo(raw json.RawMessage, storeDir string, modulo map[string]string, read func(string) ([]byte, error)) (*artifact.Realisation, error) {
	var probe struct {
		ID    string                                `json:"id"`
		Key   *struct{ DrvPath, OutputName string } `json:"key"`
		Value json.RawMessage                       `json:"value"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, err
	}
	if strings.HasPrefix(probe.ID, "sha256:") {
		v, err := realisation.ParseV1(raw, storeDir)
		if err != nil {
			return nil, err
		}
		rl := &artifact.Realisation{OutPath: storeDir + "/" + v.OutPath, Output: v.Key.Output, HashKey: &v.Key, V1: v}
		if drv, ok := modulo[v.Key.DrvHash]; ok {
			if pk, err := realisation.NewPathKey(path.Base(drv), v.Key.Output); err == nil {
				rl.PathKey, rl.V2 = &pk, &realisation.V2{OutPath: v.OutPath}
			}
		}
		return rl, nil
	}
	var drv, output string
	value := []byte(raw)
	switch {
	case strings.Contains(probe.ID, "^"):
		drv, output, _ = strings.Cut(probe.ID, "^")
	case probe.Key != nil && probe.Value != nil:
		drv, output, value = probe.Key.DrvPath, probe.Key.OutputName, probe.Value
	default:
		return nil, nil
	}
	pk, err := realisation.NewPathKey(path.Base(drv), output)
	if err != nil {
		return nil, err
	}
	v, err := realisation.ParseV2(value, storeDir)
	if err != nil {
		return nil, err
	}
	rl := &artifact.Realisation{OutPath: storeDir + "/" + v.OutPath, Output: output, PathKey: &pk, V2: v}
	if h, err := realisation.HashModulo(storeDir+"/"+pk.Drv, read); err == nil {
		if hk, err := realisation.ParseHashKey(h + "!" + output); err == nil {
			rl.HashKey, rl.V1 = &hk, &realisation.V1{Key: hk, OutPath: v.OutPath, Dependent: map[string]string{}}
		}
	}
	return rl, nil
}

// buildLogs reads the build logs of the closure's derivers from the
// local store's log directory, where Nix keeps them
// (<log dir>/drvs/<first 2 characters of the base name>/<the rest>,
// bzip2-compressed unless compress-build-log is off): each checked to
// decode within spec.MaxLogSize. A deriver without a log is skipped
// silently (logs of substituted paths are not kept); one that cannot be
// read, with a warning.
func (s *LocalStore) buildLogs(infos []*narinfo.NarInfo) []artifact.ClosureFile {
	sorted := slices.Clone(infos)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].StorePath < sorted[j].StorePath })
	seen := map[string]bool{}
	var files []artifact.ClosureFile
	for _, info := range sorted {
		base := info.Deriver
		if base == "" || seen[base] || realisation.CheckDrvName(base) != nil {
			continue
		}
		seen[base] = true
		f, err := s.logFile(base)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			slog.Warn("cannot read a build log; the closure is pushed without it", "drv", base, "err", err)
			continue
		}
		files = append(files, artifact.ClosureFile{StorePath: info.StorePath, Artifact: artifact.NewLogArtifact(s.storeDir()+"/"+base, f)})
	}
	return files
}

func (s *LocalStore) logDir() string {
	if s.LogDir != "" {
		return s.LogDir
	}
	if d := os.Getenv("NIX_LOG_DIR"); d != "" {
		return d
	}
	return "/nix/var/log/nix"
}

// logFile finds the log of the derivation base and reads it once,
// decoded, for its digest and size; the File opens it again to store it.
func (s *LocalStore) logFile(base string) (artifact.File, error) {
	plain := filepath.Join(s.logDir(), "drvs", base[:2], base[2:])
	name, enc := plain+".bz2", "bzip2"
	if _, err := os.Stat(name); errors.Is(err, fs.ErrNotExist) {
		name, enc = plain, ""
	}
	return decodedFile(name, enc, "log/"+base, spec.MediaTypeLog, spec.MaxLogSize)
}

// decodedFile reads the file name, decoded from enc (a Content-Encoding
// name, "" for none) within limit bytes, once for its digest and size;
// the File opens and decodes it again when stored, so that nothing large
// is held in memory.
func decodedFile(name, enc, title, mediaType string, limit int64) (artifact.File, error) {
	open := func() (io.ReadCloser, error) {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		rc, err := codec.DecodeContent(f, enc, limit)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return closeBoth{rc, f}, nil
	}
	rc, err := open()
	if err != nil {
		return artifact.File{}, err
	}
	h := sha256.New()
	n, err := io.Copy(h, rc)
	rc.Close()
	if err != nil {
		return artifact.File{}, fmt.Errorf("%s: %w", name, err)
	}
	return artifact.File{Title: title, MediaType: mediaType, Digest: digest.NewDigest(digest.SHA256, h), Size: n,
		Open: func() (io.Reader, error) { return open() }}, nil
}

// closeBoth closes a decoder and the file under it.
type closeBoth struct {
	io.ReadCloser
	f *os.File
}

func (c closeBoth) Close() error {
	err := c.ReadCloser.Close()
	if ferr := c.f.Close(); err == nil {
		err = ferr
	}
	return err
}

// readBounded reads a file of at most limit bytes.
func readBounded(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, limit)
	}
	return data, nil
}
