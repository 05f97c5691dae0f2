package realisation

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/nixoci/nixoci/narinfo"
)

// V2 is a build trace value in the layout of Nix 2.35, as
// `build-trace-v2/<drv>/<output>.doi` holds it: the path is the key, the
// body {"outPath": <base name>, "signatures": [{"keyName", "sig"}, …]}
// (UnkeyedRealisation's JSON; the 2.35 release notes, "Content-addressed
// derivations: realisations keyed by store path instead of hash modulo").
type V2 struct {
	OutPath    string   // base name
	Signatures []string // "<key name>:<base64>", as in narinfos
}

// ParseV2 parses and checks a build trace value. Signatures may be
// objects ({"keyName", "sig"}, what 2.35 writes) or "<name>:<base64>"
// strings (what it also reads); other fields (dependentRealisations, as
// written before 2.35) are ignored as Nix ignores them.
func ParseV2(data []byte, storeDir string) (*V2, error) {
	m, err := decodeObject(data)
	if err != nil {
		return nil, err
	}
	out, err := stringField(m, "outPath")
	if err != nil {
		return nil, err
	}
	v := &V2{}
	if v.OutPath, err = outPathBase(out, storeDir); err != nil {
		return nil, err
	}
	if raw, ok := m["signatures"]; ok {
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, invalid("signatures is not a list")
		}
		for _, it := range items {
			var s string
			if json.Unmarshal(it, &s) != nil {
				var o struct {
					KeyName *string `json:"keyName"`
					Sig     *string `json:"sig"`
				}
				if json.Unmarshal(it, &o) != nil || o.KeyName == nil || o.Sig == nil {
					return nil, invalid("a signature is neither \"<name>:<base64>\" nor {\"keyName\", \"sig\"}")
				}
				s = *o.KeyName + ":" + *o.Sig
			}
			if err := checkSig(s); err != nil {
				return nil, err
			}
			v.Signatures = append(v.Signatures, s)
		}
	}
	return v, nil
}

// Marshal renders the value as Nix 2.35 writes it: keys sorted,
// signatures as objects, sorted and unique.
func (v *V2) Marshal() []byte {
	var b strings.Builder
	b.WriteString(`{"outPath":`)
	jsonString(&b, v.OutPath)
	b.WriteString(`,"signatures":[`)
	for i, s := range sortedUnique(v.Signatures) {
		if i > 0 {
			b.WriteByte(',')
		}
		name, sig, _ := strings.Cut(s, ":")
		b.WriteString(`{"keyName":`)
		jsonString(&b, name)
		b.WriteString(`,"sig":`)
		jsonString(&b, sig)
		b.WriteByte('}')
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// Fingerprint is what a signature of the entry (key, v) signs
// (UnkeyedRealisation::fingerprint: the entry's JSON, {"key", "value"},
// without the value's "signatures").
func (v *V2) Fingerprint(key PathKey) string {
	var b strings.Builder
	b.WriteString(`{"key":{"drvPath":`)
	jsonString(&b, key.Drv)
	b.WriteString(`,"outputName":`)
	jsonString(&b, key.Output)
	b.WriteString(`},"value":{"outPath":`)
	jsonString(&b, v.OutPath)
	b.WriteString(`}}`)
	return b.String()
}

// Sign adds a signature by k of the entry (key, v).
func (v *V2) Sign(key PathKey, k narinfo.SecretKey) error {
	sig, err := sign(k, v.Fingerprint(key))
	if err != nil {
		return err
	}
	v.Signatures = append(slices.DeleteFunc(v.Signatures, func(s string) bool { return strings.HasPrefix(s, k.Name+":") }), sig)
	return nil
}

// Verified reports whether one of v's signatures of (key, v) verifies
// under keys.
func (v *V2) Verified(key PathKey, keys []narinfo.PublicKey) bool {
	fp := v.Fingerprint(key)
	for _, s := range v.Signatures {
		if verify(s, fp, keys) {
			return true
		}
	}
	return false
}
