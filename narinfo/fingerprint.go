package narinfo

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Fingerprint returns the string that binary cache signatures sign:
//
//	1;<StorePath>;<NarHash as sha256:nix32>;<NarSize>;<references>
//
// where <references> are the full store paths of n.References (the store
// directory of StorePath, "/", and the base name), sorted and joined with
// commas. Only StorePath, NarHash, NarSize and References are checked; the
// error matches ErrMissingField or ErrInvalidValue.
func (n *NarInfo) Fingerprint() (string, error) {
	if err := n.validatePath(); err != nil {
		return "", fmt.Errorf("narinfo: fingerprint: %w", err)
	}
	narHash, err := normaliseHash(n.NarHash)
	if err != nil {
		return "", fmt.Errorf("narinfo: fingerprint: %w", err)
	}
	dir := n.StoreDir()
	refs := make([]string, len(n.References))
	for i, r := range n.References {
		refs[i] = dir + "/" + r
	}
	slices.Sort(refs)
	return "1;" + n.StorePath + ";" + narHash + ";" +
		strconv.FormatUint(n.NarSize, 10) + ";" + strings.Join(refs, ","), nil
}
