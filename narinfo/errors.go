package narinfo

import (
	"errors"
	"fmt"
	"strconv"
)

// Sentinel errors. Errors returned by this package match one of them under
// [errors.Is]; their messages carry the details.
var (
	// ErrSyntax means a line of a narinfo is not of the form "Key: value",
	// or a key that may appear only once appears again.
	ErrSyntax = errors.New("narinfo: syntax error")

	// ErrMissingField means a required key (StorePath, URL, NarHash,
	// NarSize, or Compression for a hand-built NarInfo) is absent.
	ErrMissingField = errors.New("narinfo: missing required field")

	// ErrInvalidValue means the value of a field is malformed, such as a
	// bad store path, hash or number, or a value containing a line break.
	ErrInvalidValue = errors.New("narinfo: invalid value")

	// ErrTooLarge means the input to Parse exceeds MaxSize bytes.
	ErrTooLarge = errors.New("narinfo: input too large")

	// ErrInvalidKey means a signing key is malformed. Errors matching it
	// never contain secret key material.
	ErrInvalidKey = errors.New("narinfo: invalid signing key")
)

// A ParseError reports a problem with one line of a narinfo.
type ParseError struct {
	Line int   // 1-based line number
	Err  error // the problem; matches one of the sentinel errors
}

// Error returns a message of the form "narinfo: line N: problem".
func (e *ParseError) Error() string {
	return fmt.Sprintf("narinfo: line %d: %v", e.Line, e.Err)
}

// Unwrap returns e.Err.
func (e *ParseError) Unwrap() error { return e.Err }

// detailError is an error with its own message that matches the sentinel
// kind under errors.Is and optionally wraps an underlying cause.
type detailError struct {
	kind  error
	msg   string
	cause error
}

func (e *detailError) Error() string {
	if e.cause != nil {
		return e.msg + ": " + e.cause.Error()
	}
	return e.msg
}

func (e *detailError) Unwrap() []error {
	if e.cause != nil {
		return []error{e.kind, e.cause}
	}
	return []error{e.kind}
}

// newError returns an error matching kind with a formatted message.
func newError(kind error, format string, args ...any) error {
	return &detailError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// invalid returns an ErrInvalidValue error with a formatted message.
func invalid(format string, args ...any) error {
	return newError(ErrInvalidValue, format, args...)
}

// missing returns the ErrMissingField error for key.
func missing(key string) error {
	return newError(ErrMissingField, "missing %s", key)
}

// fieldError prefixes an error with the narinfo key it concerns.
type fieldError struct {
	key string
	err error
}

func (e *fieldError) Error() string { return e.key + ": " + e.err.Error() }
func (e *fieldError) Unwrap() error { return e.err }

// inField attributes err, if non-nil, to the field key.
func inField(key string, err error) error {
	if err == nil {
		return nil
	}
	return &fieldError{key: key, err: err}
}

// quote quotes s for an error message, shortening it if it is long.
func quote(s string) string {
	const max = 80
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}
