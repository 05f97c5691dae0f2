package realisation

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"

	"github.com/nix-community/go-nix/pkg/derivation"
)

// MaxDerivations bounds the derivations HashModulo reads for one
// derivation (itself and its inputs, recursively).
const MaxDerivations = 10_000

// ErrNoHashModulo: the hash modulo of a derivation cannot be computed
// (an input derivation is missing, or the derivation is impure).
var ErrNoHashModulo = errors.New("cannot compute the derivation's hash modulo")

// HashModulo computes the hash modulo of the derivation drvPath
// (absolute), the hash a realisation's key names before Nix 2.35
// (HashKey.DrvHash, "sha256:<hex>"): the sha256 of the derivation's ATerm
// with its outputs masked (output paths and the environment variables
// named like outputs set to "") and each input derivation replaced by the
// hex of its own hash modulo, computed without masking
// (hashDerivationModulo and staticOutputHashes in Nix 2.8's
// src/libstore/derivations.cc); for a fixed-output derivation, the
// sha256 of "fixed:out:<method+algo>:<hex hash>:<output path>". read
// returns a derivation's file; inputs are read recursively (each once, at
// most MaxDerivations). A resolved derivation, which is what Nix records
// as an output's deriver, has no input derivations and needs no read
// beyond its own.
func HashModulo(drvPath string, read func(drvPath string) ([]byte, error)) (string, error) {
	m := &moduloHasher{read: read, memo: map[string]string{}}
	h, err := m.hash(drvPath, true, 0)
	if err != nil {
		return "", err
	}
	return "sha256:" + h, nil
}

type moduloHasher struct {
	read func(string) ([]byte, error)
	memo map[string]string // unmasked hashes of input derivations
}

func (m *moduloHasher) hash(drvPath string, mask bool, depth int) (string, error) {
	if !mask {
		if h, ok := m.memo[drvPath]; ok {
			return h, nil
		}
	}
	if len(m.memo) >= MaxDerivations || depth > 1000 {
		return "", fmt.Errorf("%s: %w: more than %d input derivations", drvPath, ErrNoHashModulo, MaxDerivations)
	}
	data, err := m.read(drvPath)
	if err != nil {
		return "", fmt.Errorf("%s: %w: %w", drvPath, ErrNoHashModulo, err)
	}
	drv, err := derivation.ReadDerivation(bytes.NewReader(data))
	if err != nil {
		return "", fmt.Errorf("%s: %w", path.Base(drvPath), err)
	}
	for _, o := range drv.Outputs {
		// Impure derivations (written with the hash "impure") have no
		// realisations Nix keeps.
		if o.Hash == "impure" || o.HashAlgorithm == "impure" {
			return "", fmt.Errorf("%s: %w: impure derivation", path.Base(drvPath), ErrNoHashModulo)
		}
	}
	if o, ok := drv.Outputs["out"]; ok && len(drv.Outputs) == 1 && o.HashAlgorithm != "" && o.Hash != "" {
		sum := sha256.Sum256([]byte("fixed:out:" + o.HashAlgorithm + ":" + o.Hash + ":" + o.Path))
		return m.remember(drvPath, mask, hex.EncodeToString(sum[:])), nil
	}
	inputs := make(map[string][]string, len(drv.InputDerivations))
	for input, outputs := range drv.InputDerivations {
		h, err := m.hash(input, false, depth+1)
		if err != nil {
			return "", err
		}
		// Two inputs with one hash modulo merge their output sets, as
		// Nix's std::map<std::string, StringSet> does.
		merged := append(inputs[h], outputs...)
		slices.Sort(merged)
		inputs[h] = slices.Compact(merged)
	}
	d := *drv
	d.InputDerivations = inputs
	if mask {
		d.Env = maps.Clone(drv.Env)
		d.Outputs = make(map[string]*derivation.Output, len(drv.Outputs))
		for name, o := range drv.Outputs {
			masked := *o
			masked.Path = ""
			d.Outputs[name] = &masked
			if _, ok := d.Env[name]; ok {
				d.Env[name] = ""
			}
		}
	}
	sum := sha256.New()
	if err := d.WriteDerivation(sum); err != nil {
		return "", fmt.Errorf("%s: %w", path.Base(drvPath), err)
	}
	return m.remember(drvPath, mask, hex.EncodeToString(sum.Sum(nil))), nil
}

func (m *moduloHasher) remember(drvPath string, mask bool, h string) string {
	if !mask {
		m.memo[drvPath] = h
	}
	return h
}
