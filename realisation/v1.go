package realisation

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/nixoci/nixoci/narinfo"
)

// V1 is a realisation in the layout before Nix 2.35, as
// `realisations/<id>.doi` holds it (Realisation::toJSON in Nix 2.8's
// src/libstore/realisation.cc).
type V1 struct {
	Key        HashKey
	OutPath    string            // base name
	Signatures []string          // "<key name>:<base64>"
	Dependent  map[string]string // dependentRealisations: id -> output base name
}

// ParseV1 parses and checks a `realisations/<id>.doi` file: a well-formed
// id, an outPath that is a store path (base name, or absolute in
// storeDir), well-formed signatures and dependentRealisations.
func ParseV1(data []byte, storeDir string) (*V1, error) {
	m, err := decodeObject(data)
	if err != nil {
		return nil, err
	}
	id, err := stringField(m, "id")
	if err != nil {
		return nil, err
	}
	v := &V1{Dependent: map[string]string{}}
	if v.Key, err = ParseHashKey(id); err != nil {
		return nil, err
	}
	out, err := stringField(m, "outPath")
	if err != nil {
		return nil, err
	}
	if v.OutPath, err = outPathBase(out, storeDir); err != nil {
		return nil, err
	}
	if raw, ok := m["signatures"]; ok {
		if err := json.Unmarshal(raw, &v.Signatures); err != nil {
			return nil, invalid("signatures is not a list of strings")
		}
		for _, s := range v.Signatures {
			if err := checkSig(s); err != nil {
				return nil, err
			}
		}
	}
	if raw, ok := m["dependentRealisations"]; ok {
		var deps map[string]string
		if err := json.Unmarshal(raw, &deps); err != nil {
			return nil, invalid("dependentRealisations is not an object of strings")
		}
		for id, p := range deps {
			if _, err := ParseHashKey(id); err != nil {
				return nil, fmt.Errorf("dependentRealisations: %w", err)
			}
			base, err := outPathBase(p, storeDir)
			if err != nil {
				return nil, fmt.Errorf("dependentRealisations %s: %w", id, err)
			}
			v.Dependent[id] = base
		}
	}
	return v, nil
}

// json renders v as Nix does, keys sorted (nlohmann::json's dump()),
// with or without the signatures.
func (v *V1) json(withSigs bool) string {
	var b strings.Builder
	b.WriteString(`{"dependentRealisations":{`)
	ids := make([]string, 0, len(v.Dependent))
	for id := range v.Dependent {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		jsonString(&b, id)
		b.WriteByte(':')
		jsonString(&b, v.Dependent[id])
	}
	b.WriteString(`},"id":`)
	jsonString(&b, v.Key.String())
	b.WriteString(`,"outPath":`)
	jsonString(&b, v.OutPath)
	if withSigs {
		b.WriteString(`,"signatures":[`)
		for i, s := range sortedUnique(v.Signatures) {
			if i > 0 {
				b.WriteByte(',')
			}
			jsonString(&b, s)
		}
		b.WriteByte(']')
	}
	b.WriteByte('}')
	return b.String()
}

// Marshal renders the file as Nix writes it.
func (v *V1) Marshal() []byte { return []byte(v.json(true)) }

// Fingerprint is what a signature of v signs (Realisation::fingerprint:
// the JSON without "signatures").
func (v *V1) Fingerprint() string { return v.json(false) }

// Sign adds a signature by k (replacing one by the same key name).
func (v *V1) Sign(k narinfo.SecretKey) error {
	sig, err := sign(k, v.Fingerprint())
	if err != nil {
		return err
	}
	v.Signatures = append(slices.DeleteFunc(v.Signatures, func(s string) bool { return strings.HasPrefix(s, k.Name+":") }), sig)
	return nil
}

// Verified reports whether one of v's signatures verifies under keys.
func (v *V1) Verified(keys []narinfo.PublicKey) bool {
	fp := v.Fingerprint()
	for _, s := range v.Signatures {
		if verify(s, fp, keys) {
			return true
		}
	}
	return false
}
