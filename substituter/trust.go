package substituter

import (
	"slices"

	"github.com/nixoci/nixoci/narinfo"
)

// Serve is a trust anchor: Nix installs, as root, what a key it trusts
// signed. So serve adds its signatures (Options.SignKeys) only to paths
// (and realisations) it can vouch for: those whose stored signatures verify against a key
// the operator named (Options.TrustedKeys) or against its own signing
// keys, which it adds to the paths it receives through an authenticated
// upload before storing them. Everything else is served with the
// signatures it has, for Nix to judge against its own trusted keys.
// Options.SignUnverified signs everything the backends hold: anyone who
// can push to them then gets paths trusted by every client.

// trustPolicy decides which narinfos serve signs.
type trustPolicy struct {
	sign    []narinfo.SecretKey
	trusted []narinfo.PublicKey // named keys and the public halves of sign
	signAll bool
}

func newTrustPolicy(opts Options) trustPolicy {
	p := trustPolicy{sign: opts.SignKeys, trusted: slices.Clone(opts.TrustedKeys), signAll: opts.SignUnverified}
	if opts.Pull != nil {
		// What serve verified an upstream's narinfos against, it vouches
		// for (SPEC.md section 14.2).
		p.trusted = append(p.trusted, opts.Pull.Keys...)
	}
	for _, k := range opts.SignKeys {
		p.trusted = append(p.trusted, k.Public())
	}
	return p
}

// vouches reports whether serve adds its signatures to info: a stored
// signature verifies against a trusted key, or the policy signs all.
func (p trustPolicy) vouches(info *narinfo.NarInfo) bool {
	return p.signAll || narinfo.VerifyAny(info, p.trusted)
}

// keysFor returns the keys serve signs a realisation with: all of them
// if verified (its signatures checked against keys) holds for the
// trusted keys or the policy signs all, else none.
func (p trustPolicy) keysFor(verified func(keys []narinfo.PublicKey) bool) []narinfo.SecretKey {
	if len(p.sign) == 0 || !p.signAll && !verified(p.trusted) {
		return nil
	}
	return p.sign
}

// render formats info as served: with serve's signatures if it vouches
// for it (signed), else with the signatures it has. info is not changed.
func (p trustPolicy) render(info *narinfo.NarInfo) (text []byte, signed bool, err error) {
	if len(p.sign) == 0 || !p.vouches(info) {
		text, err = info.Format()
		return text, false, err
	}
	out := *info
	out.Sigs = slices.Clone(info.Sigs)
	if err := p.signInto(&out); err != nil {
		return nil, false, err
	}
	text, err = out.Format()
	return text, true, err
}

// signInto adds serve's signatures to info (an upload's, before it is
// stored).
func (p trustPolicy) signInto(info *narinfo.NarInfo) error {
	for _, k := range p.sign {
		if err := info.AddSignature(k); err != nil {
			return err
		}
	}
	return nil
}
