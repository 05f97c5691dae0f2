package narinfo

// CheckBaseName checks that s is a store path base name, "<hash>-<name>",
// as Nix accepts it: a 32-character nix-base32 hash part and a name of 1
// to 211 characters from [A-Za-z0-9+-._?=]. The error matches
// ErrInvalidValue.
func CheckBaseName(s string) error { return checkBaseName(s) }
