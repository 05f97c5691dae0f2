package narinfo

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Parse reads a narinfo from r. See the package documentation for the rules
// it applies. Errors about a particular line are *ParseError values; all
// errors match one of the package's sentinel errors.
func Parse(r io.Reader) (*NarInfo, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("narinfo: reading: %w", err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, MaxSize)
	}
	return parse(string(data))
}

func parse(s string) (*NarInfo, error) {
	lines := strings.Split(s, "\n")
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	n := new(NarInfo)
	seen := make(map[string]bool)
	for i, line := range lines {
		if err := n.parseLine(line, seen); err != nil {
			return nil, &ParseError{Line: i + 1, Err: err}
		}
	}
	for _, key := range []string{keyStorePath, keyURL, keyNarHash, keyNarSize} {
		if !seen[key] {
			return nil, fmt.Errorf("narinfo: %w", missing(key))
		}
	}
	if !seen[keyCompression] {
		n.Compression = "bzip2"
	}
	return n, nil
}

// parseLine parses one line, recording known keys in seen.
func (n *NarInfo) parseLine(line string, seen map[string]bool) error {
	if line == "" {
		return newError(ErrSyntax, "empty line")
	}
	if strings.IndexByte(line, '\r') >= 0 {
		return newError(ErrSyntax, "carriage return in line (CRLF line endings are not supported)")
	}
	key, value, ok := strings.Cut(line, ": ")
	if !ok {
		return newError(ErrSyntax, "missing \": \" in %s", quote(line))
	}
	if err := checkKey(key); err != nil {
		return err
	}
	if isKnownKey(key) {
		if seen[key] && key != keySig {
			return newError(ErrSyntax, "duplicate %s", key)
		}
		seen[key] = true
	}
	return inField(key, n.set(key, value))
}

// set stores value, from a line with the given key, in n.
func (n *NarInfo) set(key, value string) error {
	var err error
	switch key {
	case keyStorePath:
		err = checkStorePath(value)
		n.StorePath = value
	case keyURL:
		if value == "" {
			err = invalid("empty value")
		}
		n.URL = value
	case keyCompression:
		err = checkCompression(value)
		n.Compression = value
	case keyFileHash:
		n.FileHash, err = normaliseHash(value)
	case keyFileSize:
		n.FileSize, err = parseSize(value)
	case keyNarHash:
		n.NarHash, err = normaliseHash(value)
	case keyNarSize:
		n.NarSize, err = parseSize(value)
		if err == nil && n.NarSize == 0 {
			err = invalid("must not be 0")
		}
	case keyReferences:
		n.References = strings.FieldsFunc(value, func(r rune) bool { return r == ' ' })
		if len(n.References) == 0 {
			n.References = nil
		}
		err = checkReferences(n.References)
	case keyDeriver:
		if value != "unknown-deriver" {
			err = checkBaseName(value)
			n.Deriver = value
		}
	case keySystem:
		n.System = value
	case keySig:
		err = checkSig(value)
		n.Sigs = append(n.Sigs, value)
	case keyCA:
		n.CA = value
	default:
		n.Extra = append(n.Extra, Field{Key: key, Value: value})
	}
	return err
}

// parseSize parses a decimal size.
func parseSize(s string) (uint64, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, invalid("invalid number %s", quote(s))
	}
	return v, nil
}
