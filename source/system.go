package source

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nix-community/go-nix/pkg/derivation"

	"github.com/nixoci/nixoci/narinfo"
	"github.com/nixoci/nixoci/spec"
)

// derivedSystem is the System a local store path records (SPEC.md
// section 4.1): the system of its deriver's .drv when that file is in
// the store, parses as a derivation and lists storePath among its
// outputs; "" otherwise. A .drv's name is a hash of its content, so
// every machine that holds the deriver reads the same system.
func derivedSystem(storeDir, storePath, deriver string) (string, error) {
	if deriver == "" {
		return "", nil
	}
	f, err := os.Open(filepath.Join(storeDir, deriver))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil // garbage-collected, or substituted without it
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, spec.MaxDerivationSize+1))
	if err != nil {
		return "", err
	}
	if len(data) > spec.MaxDerivationSize {
		return "", fmt.Errorf("%s: larger than %d bytes", deriver, spec.MaxDerivationSize)
	}
	drv, err := derivation.ReadDerivation(strings.NewReader(string(data)))
	if err != nil {
		return "", fmt.Errorf("%s: %w", deriver, err)
	}
	floating := true
	for _, o := range drv.Outputs {
		if o.Path == storePath {
			return drv.Platform, nil
		}
		floating = floating && o.Path == ""
	}
	if floating {
		// A content-addressed derivation lists no output paths: its
		// outputs are known only after the build (SPEC.md section 4.1).
		return "", nil
	}
	return "", fmt.Errorf("%s does not list %s among its outputs", deriver, storePath)
}

// addSystems sets the System of each info from its deriver. A deriver
// that cannot be read only leaves System unset, with a warning: the
// path is still pushed, as from a machine without the .drv.
func (s *LocalStore) addSystems(infos map[string]*narinfo.NarInfo) {
	for p, info := range infos {
		sys, err := derivedSystem(s.storeDir(), p, info.Deriver)
		if err != nil {
			slog.Warn("cannot read the system of a store path from its deriver; it is pushed without one", "path", p, "err", err)
			continue
		}
		info.System = sys
	}
}

// warnMixedSystems reports a closure whose paths record different
// systems (other than builtin): images of it need an explicit platform.
func warnMixedSystems(infos []*narinfo.NarInfo) {
	bySystem := map[string]string{} // system -> one path recording it
	for _, info := range infos {
		if info.System != "" && info.System != spec.SystemBuiltin {
			bySystem[info.System] = info.StorePath
		}
	}
	if len(bySystem) < 2 {
		return
	}
	var parts []string
	for _, sys := range slices.Sorted(maps.Keys(bySystem)) {
		parts = append(parts, sys+" ("+path.Base(bySystem[sys])+")")
	}
	slog.Warn("the closure's paths record different systems; an image of it needs --platform", "systems", strings.Join(parts, ", "))
}
