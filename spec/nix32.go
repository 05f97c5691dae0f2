package spec

// IsNix32 reports whether s is non-empty and written in Nix's base-32
// alphabet (0-9 and a-z without e, o, u and t), as store-path hash parts
// and NAR file hashes are.
func IsNix32(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' && c != 'e' && c != 'o' && c != 'u' && c != 't') {
			return false
		}
	}
	return s != ""
}

// IsHashPart reports whether s is the hash part of a store path: 32
// characters of nix-base32, as store-path tags and narinfo names are.
func IsHashPart(s string) bool { return len(s) == 32 && IsNix32(s) }
