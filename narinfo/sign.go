package narinfo

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"strings"
)

// Sign signs the fingerprint of n (see NarInfo.Fingerprint) and returns the
// value of a Sig line, "<key name>:<base64 signature>". It does not modify
// n; see NarInfo.AddSignature.
func (k SecretKey) Sign(n *NarInfo) (string, error) {
	if err := checkKeyName(k.Name); err != nil {
		return "", fmt.Errorf("narinfo: sign: %w", err)
	}
	if len(k.Key) != ed25519.PrivateKeySize {
		return "", fmt.Errorf("narinfo: sign: %w",
			newError(ErrInvalidKey, "key is %d bytes long, want %d", len(k.Key), ed25519.PrivateKeySize))
	}
	fp, err := n.Fingerprint()
	if err != nil {
		return "", err
	}
	sig := ed25519.Sign(k.Key, []byte(fp))
	return k.Name + ":" + base64.StdEncoding.EncodeToString(sig), nil
}

// AddSignature signs n with k and records the signature in n.Sigs. A
// signature by a key with the same name is replaced in place (and any
// further ones removed); otherwise the signature is appended.
func (n *NarInfo) AddSignature(k SecretKey) error {
	sig, err := k.Sign(n)
	if err != nil {
		return err
	}
	prefix := k.Name + ":"
	sigs := make([]string, 0, len(n.Sigs)+1)
	replaced := false
	for _, s := range n.Sigs {
		if !strings.HasPrefix(s, prefix) {
			sigs = append(sigs, s)
		} else if !replaced {
			sigs = append(sigs, sig)
			replaced = true
		}
	}
	if !replaced {
		sigs = append(sigs, sig)
	}
	n.Sigs = sigs
	return nil
}

// Verify reports whether any signature in n.Sigs made by a key named k.Name
// is a valid signature of n's fingerprint under k. It returns false if n
// has no valid fingerprint.
func (k PublicKey) Verify(n *NarInfo) bool {
	return VerifyAny(n, []PublicKey{k})
}

// VerifyAny reports whether n carries a valid signature by any of keys.
func VerifyAny(n *NarInfo, keys []PublicKey) bool {
	var fp []byte
	for _, s := range n.Sigs {
		name, b64, ok := strings.Cut(s, ":")
		if !ok {
			continue
		}
		var sig []byte
		for _, k := range keys {
			if k.Name != name || len(k.Key) != ed25519.PublicKeySize {
				continue
			}
			if sig == nil {
				var err error
				if sig, err = base64.StdEncoding.DecodeString(b64); err != nil || len(sig) != ed25519.SignatureSize {
					break
				}
			}
			if fp == nil {
				f, err := n.Fingerprint()
				if err != nil {
					return false
				}
				fp = []byte(f)
			}
			if ed25519.Verify(k.Key, fp, sig) {
				return true
			}
		}
	}
	return false
}
