package source

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/nixoci/nixoci/codec"
	"github.com/nixoci/nixoci/nar"
	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// LocalStore is the local Nix store as an artifact.Source. It asks the Nix
// command-line tools for closures and metadata, using only output forms
// that have been stable across Nix versions (`nix-store --query
// --requisites`, `nix-store --dump-db`) and reading signatures and content
// addresses from `nix path-info --json` in whichever shape the installed
// version prints.
type LocalStore struct {
	// StoreDir is the store directory; default $NIX_STORE_DIR or /nix/store.
	StoreDir string
	// Compression of the NARs it packs; default spec.DefaultCompression.
	Compression spec.Compression
	// NixStore and Nix are the commands run; default "nix-store", "nix".
	NixStore, Nix string
	// Logs makes Files include the build logs of the closure's derivers.
	Logs bool
	// LogDir is Nix's log directory; default $NIX_LOG_DIR or
	// /nix/var/log/nix.
	LogDir string
}

func (s *LocalStore) storeDir() string {
	if s.StoreDir != "" {
		return s.StoreDir
	}
	if d := os.Getenv("NIX_STORE_DIR"); d != "" {
		return filepath.Clean(d)
	}
	return "/nix/store"
}

// String names the source in messages.
func (s *LocalStore) String() string { return "local store " + s.storeDir() }

// ResolveRoot turns an argument (a store path, a path inside one, or a
// path through symlinks such as ./result or ./result/bin/app) into a store
// path. Symlinks are followed one component at a time until the path is
// inside the store; the store path itself is not followed, since a store
// path may be a symlink.
func (s *LocalStore) ResolveRoot(arg string) (string, error) {
	dir := s.storeDir()
	p, err := filepath.Abs(arg)
	if err != nil {
		return "", err
	}
	rest := strings.Split(strings.TrimPrefix(p, "/"), "/")
	cur := "/"
	for links := 0; ; {
		if tail, ok := strings.CutPrefix(cur, dir+"/"); ok && tail != "" {
			name, _, _ := strings.Cut(tail, "/")
			return dir + "/" + name, nil
		}
		if len(rest) == 0 {
			return "", fmt.Errorf("%s: %w (%s)", arg, ErrNotInStore, dir)
		}
		next := filepath.Join(cur, rest[0])
		rest = rest[1:]
		fi, err := os.Lstat(next)
		if err != nil {
			return "", fmt.Errorf("%s: %w", arg, err)
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > 40 {
			return "", fmt.Errorf("%s: too many levels of symbolic links", arg)
		}
		target, err := os.Readlink(next)
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(cur, target)
		}
		// Resolve the link target from the root, then what followed it.
		rest = append(strings.Split(strings.TrimPrefix(filepath.Clean(target), "/"), "/"), rest...)
		cur = "/"
	}
}

// Closure returns the metadata of every path in the closure of roots.
func (s *LocalStore) Closure(ctx context.Context, roots []string) ([]*narinfo.NarInfo, error) {
	out, err := s.run(ctx, s.nixStore(), append([]string{"--query", "--requisites"}, roots...)...)
	if err != nil {
		return nil, err
	}
	paths := strings.Fields(string(out))
	if len(paths) == 0 {
		return nil, fmt.Errorf("nix-store --query --requisites printed no paths for %s", strings.Join(roots, " "))
	}
	infos := make(map[string]*narinfo.NarInfo, len(paths))
	// Batches keep command lines far below ARG_MAX for huge closures.
	for batch := range slices.Chunk(paths, 1000) {
		// The two commands run at once: each is mostly Nix starting up.
		sigs := s.startPathInfo(ctx, batch)
		out, err := s.run(ctx, s.nixStore(), append([]string{"--dump-db"}, batch...)...)
		if err != nil {
			return nil, err
		}
		if err := parseDumpDB(out, infos); err != nil {
			return nil, err
		}
		addSignatures(sigs(), infos)
	}
	s.addSystems(infos)
	result := make([]*narinfo.NarInfo, 0, len(paths))
	for _, p := range paths {
		info, ok := infos[p]
		if !ok {
			return nil, fmt.Errorf("nix-store --dump-db printed nothing for %s", p)
		}
		result = append(result, info)
	}
	warnMixedSystems(result)
	return result, nil
}

func (s *LocalStore) nixStore() string {
	if s.NixStore != "" {
		return s.NixStore
	}
	return "nix-store"
}

func (s *LocalStore) nix() string {
	if s.Nix != "" {
		return s.Nix
	}
	return "nix"
}

func (s *LocalStore) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if errors.Is(err, exec.ErrNotFound) {
			msg = "is Nix installed and on PATH?"
		}
		return nil, fmt.Errorf("%s %s: %w: %s", name, args[0], err, msg)
	}
	return out, nil
}

// parseDumpDB reads `nix-store --dump-db` output: for each path its name,
// NAR hash (hex sha256), NAR size, deriver (empty line if none), the number
// of references and the references, one a line.
func parseDumpDB(out []byte, infos map[string]*narinfo.NarInfo) error {
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	line := 0
	next := func() (string, error) {
		if !sc.Scan() {
			if err := sc.Err(); err != nil {
				return "", err
			}
			return "", io.ErrUnexpectedEOF
		}
		line++
		return sc.Text(), nil
	}
	for {
		p, err := next()
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return err
		}
		fail := func(what string, err error) error {
			return fmt.Errorf("nix-store --dump-db: line %d (%s): %s: %w", line, p, what, err)
		}
		hexHash, err := next()
		if err != nil {
			return fail("hash", err)
		}
		narHash, err := narinfo.HashFromHex(hexHash)
		if err != nil {
			return fail("hash", err)
		}
		sizeText, err := next()
		if err != nil {
			return fail("size", err)
		}
		size, err := strconv.ParseUint(sizeText, 10, 64)
		if err != nil {
			return fail("size", err)
		}
		deriver, err := next()
		if err != nil {
			return fail("deriver", err)
		}
		countText, err := next()
		if err != nil {
			return fail("reference count", err)
		}
		count, err := strconv.Atoi(countText)
		if err != nil || count < 0 {
			return fail("reference count", fmt.Errorf("invalid %q", countText))
		}
		refs := make([]string, 0, count)
		for range count {
			r, err := next()
			if err != nil {
				return fail("references", err)
			}
			refs = append(refs, path.Base(r))
		}
		sort.Strings(refs)
		info := &narinfo.NarInfo{StorePath: p, NarHash: narHash, NarSize: size, References: refs}
		if deriver != "" {
			info.Deriver = path.Base(deriver)
		}
		infos[p] = info
	}
}

// startPathInfo starts `nix path-info --json` on paths and returns a
// function waiting for its output: the signatures and content addresses
// by path, or nil if the command failed or printed what this cannot
// parse (then paths are pushed with only the push's own signatures, and a
// warning says why: they are optional).
func (s *LocalStore) startPathInfo(ctx context.Context, paths []string) func() map[string]pathExtras {
	done := make(chan map[string]pathExtras, 1)
	go func() {
		out, err := s.run(ctx, s.nix(), append([]string{"path-info", "--extra-experimental-features", "nix-command", "--json"}, paths...)...)
		if err != nil {
			slog.Warn("cannot read signatures from the local store; paths are pushed with only the signatures of the push's own keys", "err", err)
			done <- nil
			return
		}
		entries, err := parsePathInfoJSON(out, s.storeDir())
		if err != nil {
			slog.Warn("cannot parse `nix path-info --json`; paths are pushed with only the signatures of the push's own keys", "err", err)
			done <- nil
			return
		}
		done <- entries
	}()
	return func() map[string]pathExtras { return <-done }
}

// addSignatures adds the signatures and content addresses of entries
// (startPathInfo) to infos.
func addSignatures(entries map[string]pathExtras, infos map[string]*narinfo.NarInfo) {
	for p, e := range entries {
		if info, ok := infos[p]; ok {
			info.Sigs = append(info.Sigs, e.Sigs...)
			info.CA = e.CA
		}
	}
}

type pathInfoEntry struct {
	Path       string   `json:"path"`
	Signatures []string `json:"signatures"`
	Sigs       []string `json:"sigs"`
	CA         *string  `json:"ca"`
}

type pathExtras struct {
	Sigs []string
	CA   string
}

// parsePathInfoJSON accepts the list form of Nix ≤ 2.18 ([{"path": …}]),
// the object form keyed by store path of later versions, and keys without
// the store directory.
func parsePathInfoJSON(data []byte, storeDir string) (map[string]pathExtras, error) {
	full := func(p string) string {
		if strings.HasPrefix(p, "/") {
			return p
		}
		return storeDir + "/" + p
	}
	out := map[string]pathExtras{}
	add := func(p string, e pathInfoEntry) {
		ex := pathExtras{Sigs: append(e.Signatures, e.Sigs...)}
		if e.CA != nil {
			ex.CA = *e.CA
		}
		out[full(p)] = ex
	}
	var list []pathInfoEntry
	if err := json.Unmarshal(data, &list); err == nil {
		for _, e := range list {
			add(e.Path, e)
		}
		return out, nil
	}
	var obj map[string]*pathInfoEntry
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, err
	}
	for p, e := range obj {
		if e != nil { // null: path not valid
			add(p, *e)
		}
	}
	return out, nil
}

// WriteNAR dumps the path, compresses it into w and checks the dump
// against the NarHash and NarSize the store database records.
func (s *LocalStore) WriteNAR(ctx context.Context, info *narinfo.NarInfo, w io.Writer) (spec.Compression, error) {
	comp := s.Compression
	if comp == "" {
		comp = spec.DefaultCompression
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(nar.Dump(pw, info.StorePath)) }()
	defer pr.Close()

	h := sha256.New()
	cw, err := codec.NewWriter(w, comp)
	if err != nil {
		return "", err
	}
	n, err := io.Copy(cw, io.TeeReader(ctxReader{ctx, pr}, h))
	if cerr := cw.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("%s: packing NAR: %w", info.StorePath, err)
	}
	if err := checkNAR(info, h, n); err != nil {
		return "", fmt.Errorf("%w (the store path changed after it was registered; `nix-store --verify --check-contents` finds such paths)", err)
	}
	return comp, nil
}
