package nar

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"sync/atomic"

	gonar "github.com/nix-community/go-nix/pkg/nar"
	"github.com/nix-community/go-nix/pkg/wire"

	"github.com/nixoci/nixoci/internal/countio"
)

// Header describes one node of a NAR. It is go-nix's nar.Header, so callers
// use a single header type for reading (this package) and writing (go-nix).
//
// Path is "/" for the root node and "/a/b" below it; Type is one of
// TypeRegular, TypeDirectory and TypeSymlink; LinkTarget is set for symlinks,
// Size and Executable for regular files.
type Header = gonar.Header

// NodeType is go-nix's nar.NodeType.
type NodeType = gonar.NodeType

// Node types, re-exported from go-nix for convenience.
const (
	TypeRegular   = gonar.TypeRegular
	TypeDirectory = gonar.TypeDirectory
	TypeSymlink   = gonar.TypeSymlink
)

// ErrInvalid is wrapped by every error reporting a violation of the NAR
// format. A NAR that is merely cut short is reported with an error wrapping
// io.ErrUnexpectedEOF instead; errors of the underlying reader are wrapped as
// they are.
var ErrInvalid = errors.New("nar: invalid archive")

// Limits bounds what a Reader accepts. The zero value of a field means the
// corresponding field of DefaultLimits.
type Limits struct {
	// MaxNameLen is the maximum length in bytes of a directory entry name
	// (NAME_MAX on Linux).
	MaxNameLen int
	// MaxTargetLen is the maximum length in bytes of a symlink target
	// (PATH_MAX-1 on Linux, the most readlink can return).
	MaxTargetLen int
	// MaxDepth is the maximum number of path components of a node: the root
	// is at depth 0, "/a" at depth 1, "/a/b" at depth 2 and so on.
	MaxDepth int
}

// DefaultLimits are the limits used by NewReader and Validate.
var DefaultLimits = Limits{
	MaxNameLen:   255,
	MaxTargetLen: 4095,
	MaxDepth:     256,
}

const (
	magic = "nix-archive-1"
	// maxTokenLen bounds the keyword tokens of the format ("(", "type",
	// "regular", "executable", "nix-archive-1", ...). The longest valid one
	// is 13 bytes, so anything longer is invalid and is never read.
	maxTokenLen = 16
)

var _ io.Reader = (*Reader)(nil)

type state uint8

const (
	stateMagic state = iota // nothing read yet
	stateFile               // a regular file header was returned; content follows
	stateLeaf               // a symlink header was returned; its ")" follows
	stateDir                // a directory header was returned; entries follow
	stateEOF                // the root node was closed
)

// frame is an open directory.
type frame struct {
	pathLen int    // length of the directory's path in Reader.path
	prev    string // name of the previous entry
	hasPrev bool
}

// Reader reads a NAR sequentially and synchronously: Next advances to the
// next node (the root first, parents before their children, entries in
// directory order) and Read reads the content of the current regular file.
// It starts no goroutines and holds no resources, so it can be abandoned at
// any point.
//
// Reader reads exactly the bytes of the NAR and nothing past its end, using
// small reads; wrap slow readers (network, files) in a bufio.Reader, which
// also keeps any bytes following the NAR available to the caller.
//
// A Reader is not safe for concurrent use.
//
// A Reader has no Close method: there is nothing to release.
type Reader struct {
	cr     countio.Reader
	limits Limits
	state  state
	err    error // sticky error, returned by every later call

	started bool // the magic has been read

	// path of the current node, without the leading "/" for the root (so
	// the root's path is empty here and "/" in headers).
	path   []byte
	frames []frame

	remaining uint64 // unread content of the current regular file
	pad       int    // padding after the current regular file's content

	skip    io.LimitedReader // reused by skipContent
	scratch [maxTokenLen + 8]byte
	strBuf  []byte
}

// NewReader returns a Reader reading a NAR from r with DefaultLimits. The
// magic is checked by the first call to Next.
func NewReader(r io.Reader) *Reader {
	return NewReaderWithLimits(r, DefaultLimits)
}

// NewReaderWithLimits is like NewReader with the given limits.
func NewReaderWithLimits(r io.Reader, l Limits) *Reader {
	if l.MaxNameLen <= 0 {
		l.MaxNameLen = DefaultLimits.MaxNameLen
	}

	if l.MaxTargetLen <= 0 {
		l.MaxTargetLen = DefaultLimits.MaxTargetLen
	}

	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultLimits.MaxDepth
	}

	return &Reader{cr: countio.Reader{R: r, N: new(atomic.Int64)}, limits: l}
}

// Offset returns the number of bytes read from the underlying reader so far.
// After Next has returned io.EOF it is the size of the NAR.
func (r *Reader) Offset() int64 {
	return r.cr.N.Load()
}

// Next advances to the next node of the archive and returns its header. Any
// unread content of the current file is skipped (and its padding checked).
// Next returns io.EOF once the root node has been closed; at that point the
// whole archive has been verified and nothing after it has been read.
//
// After an error, Next and Read keep returning that error.
func (r *Reader) Next() (*Header, error) {
	if r.err != nil {
		return nil, r.err
	}

	hdr, err := r.next()
	if err != nil && err != io.EOF {
		r.err = err
	}

	return hdr, err
}

// Read reads from the content of the current regular file. It returns io.EOF
// at the end of the content, and immediately for symlinks and directories.
// If the archive ends within the content, the error wraps
// io.ErrUnexpectedEOF.
func (r *Reader) Read(b []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}

	if r.state != stateFile || r.remaining == 0 {
		return 0, io.EOF
	}

	if uint64(len(b)) > r.remaining {
		b = b[:r.remaining]
	}

	n, err := r.cr.Read(b)
	r.remaining -= uint64(n)

	switch {
	case err == io.EOF && r.remaining == 0:
		err = nil
	case err != nil:
		err = r.ioErr(err)
		r.err = err
	}

	return n, err
}

func (r *Reader) next() (*Header, error) {
	switch r.state {
	case stateEOF:
		return nil, io.EOF

	case stateMagic:
		tok, n, err := r.token()
		if err != nil {
			return nil, err
		}

		if string(tok) != magic {
			return nil, r.invalid("bad magic: expected %q, got %s", magic, describe(tok, n))
		}

		r.started = true

		return r.node()

	case stateFile:
		if err := r.skipContent(); err != nil {
			return nil, err
		}

		if err := r.closeLeaf(); err != nil {
			return nil, err
		}

	case stateLeaf:
		if err := r.closeLeaf(); err != nil {
			return nil, err
		}

	case stateDir:
	}

	return r.entries()
}

// node parses a node, from its "(" to the start of its body, at r.path.
func (r *Reader) node() (*Header, error) {
	p := r.pathString()

	if err := r.expect("("); err != nil {
		return nil, err
	}

	if err := r.expect("type"); err != nil {
		return nil, err
	}

	tok, n, err := r.token()
	if err != nil {
		return nil, err
	}

	switch string(tok) {
	case "regular":
		return r.regular(p)

	case "symlink":
		if err := r.expect("target"); err != nil {
			return nil, err
		}

		target, err := r.readString(r.limits.MaxTargetLen, "symlink target")
		if err != nil {
			return nil, err
		}

		if target == "" {
			return nil, r.invalid("empty symlink target")
		}

		if strings.IndexByte(target, 0) >= 0 {
			return nil, r.invalid("symlink target %q contains NUL", target)
		}

		r.state = stateLeaf

		return &Header{Path: p, Type: TypeSymlink, LinkTarget: target}, nil

	case "directory":
		r.frames = append(r.frames, frame{pathLen: len(r.path)})
		r.state = stateDir

		return &Header{Path: p, Type: TypeDirectory}, nil

	default:
		return nil, r.invalid("unknown node type %s", describe(tok, n))
	}
}

func (r *Reader) regular(p string) (*Header, error) {
	tok, n, err := r.token()
	if err != nil {
		return nil, err
	}

	executable := false

	if string(tok) == "executable" {
		// The marker is followed by an empty string.
		l, err := r.readLen()
		if err != nil {
			return nil, err
		}

		if l != 0 {
			return nil, r.invalid("executable marker has non-empty value (%d bytes)", l)
		}

		executable = true

		if tok, n, err = r.token(); err != nil {
			return nil, err
		}
	}

	if string(tok) != "contents" {
		if executable {
			return nil, r.invalid("expected %q, got %s", "contents", describe(tok, n))
		}

		return nil, r.invalid("expected %q or %q, got %s", "executable", "contents", describe(tok, n))
	}

	size, err := r.readLen()
	if err != nil {
		return nil, err
	}

	if size > math.MaxInt64 {
		return nil, r.invalid("file size %d too large", size)
	}

	r.remaining = size
	r.pad = padLen(size)
	r.state = stateFile

	return &Header{Path: p, Type: TypeRegular, Size: int64(size), Executable: executable}, nil
}

// skipContent discards the unread content of the current file and checks
// its padding.
func (r *Reader) skipContent() error {
	if r.remaining > 0 {
		r.skip = io.LimitedReader{R: &r.cr, N: int64(r.remaining)} //nolint:gosec // checked in regular
		_, err := io.Copy(io.Discard, &r.skip)
		r.remaining = uint64(r.skip.N) //nolint:gosec // N only decreases

		switch {
		case err != nil:
			return r.ioErr(err)
		case r.remaining > 0:
			return r.ioErr(io.ErrUnexpectedEOF)
		}
	}

	if r.pad > 0 {
		buf := r.scratch[:r.pad]
		if _, err := io.ReadFull(&r.cr, buf); err != nil {
			return r.ioErr(err)
		}

		if !allZero(buf) {
			return r.invalid("non-zero padding after file contents")
		}

		r.pad = 0
	}

	return nil
}

// closeLeaf reads the ")" closing a file or symlink node and, unless it is
// the root, the ")" closing its directory entry.
func (r *Reader) closeLeaf() error {
	if err := r.expect(")"); err != nil {
		return err
	}

	if len(r.frames) == 0 {
		r.state = stateEOF

		return nil
	}

	if err := r.expect(")"); err != nil {
		return err
	}

	r.state = stateDir
	r.path = r.path[:r.frames[len(r.frames)-1].pathLen]

	return nil
}

// entries continues the innermost open directory: it returns the header of
// its next entry, or closes it and continues its parent.
func (r *Reader) entries() (*Header, error) {
	for len(r.frames) > 0 {
		f := &r.frames[len(r.frames)-1]
		r.path = r.path[:f.pathLen]

		tok, n, err := r.token()
		if err != nil {
			return nil, err
		}

		switch string(tok) {
		case "entry":
			return r.entry(f)

		case ")":
			r.frames = r.frames[:len(r.frames)-1]

			// Unless it was the root, the ")" closing the entry of the
			// directory just closed (r.path still names it).
			if len(r.frames) > 0 {
				if err := r.expect(")"); err != nil {
					return nil, err
				}
			}

		default:
			return nil, r.invalid("expected %q or %q, got %s", "entry", ")", describe(tok, n))
		}
	}

	r.state = stateEOF
	r.path = r.path[:0]

	return nil, io.EOF
}

func (r *Reader) entry(f *frame) (*Header, error) {
	if err := r.expect("("); err != nil {
		return nil, err
	}

	if err := r.expect("name"); err != nil {
		return nil, err
	}

	name, err := r.readString(r.limits.MaxNameLen, "entry name")
	if err != nil {
		return nil, err
	}

	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return nil, r.invalid("entry name %q not allowed", name)
	}

	if f.hasPrev {
		switch {
		case name == f.prev:
			return nil, r.invalid("duplicate entry %q", name)
		case name < f.prev:
			return nil, r.invalid("entries not sorted: %q after %q", name, f.prev)
		}
	}

	f.prev, f.hasPrev = name, true

	if len(r.frames) > r.limits.MaxDepth {
		return nil, r.invalid("entry %q nested deeper than %d levels", name, r.limits.MaxDepth)
	}

	r.path = append(r.path, '/')
	r.path = append(r.path, name...)

	if err := r.expect("node"); err != nil {
		return nil, err
	}

	return r.node()
}

// readLen reads a uint64 (a length or the size of a file).
func (r *Reader) readLen() (uint64, error) {
	n, err := wire.ReadUint64(&r.cr)
	if err != nil {
		return 0, r.ioErr(err)
	}

	return n, nil
}

// token reads a keyword token into r.scratch. A token longer than
// maxTokenLen is left unread: tok is nil and n is its claimed length.
func (r *Reader) token() (tok []byte, n uint64, err error) {
	n, err = r.readLen()
	if err != nil {
		return nil, 0, err
	}

	if n > maxTokenLen {
		return nil, n, nil
	}

	l := int(n)
	buf := r.scratch[:l+padLen(n)]

	if _, err := io.ReadFull(&r.cr, buf); err != nil {
		return nil, 0, r.ioErr(err)
	}

	if !allZero(buf[l:]) {
		return nil, 0, r.invalid("non-zero padding after %q", buf[:l])
	}

	return buf[:l], n, nil
}

// expect reads a keyword token and checks that it is want.
func (r *Reader) expect(want string) error {
	tok, n, err := r.token()
	if err != nil {
		return err
	}

	if string(tok) != want || n > maxTokenLen {
		return r.invalid("expected %q, got %s", want, describe(tok, n))
	}

	return nil
}

// readString reads a string of at most maxLen bytes. Longer strings are
// rejected before their body is read.
func (r *Reader) readString(maxLen int, what string) (string, error) {
	n, err := r.readLen()
	if err != nil {
		return "", err
	}

	if n > uint64(maxLen) { //nolint:gosec // maxLen > 0
		return "", r.invalid("%s too long (%d bytes, limit %d)", what, n, maxLen)
	}

	l := int(n)
	total := l + padLen(n)

	if cap(r.strBuf) < total {
		r.strBuf = make([]byte, total)
	}

	buf := r.strBuf[:total]
	if _, err := io.ReadFull(&r.cr, buf); err != nil {
		return "", r.ioErr(err)
	}

	if !allZero(buf[l:]) {
		return "", r.invalid("non-zero padding after %s %q", what, buf[:l])
	}

	return string(buf[:l]), nil
}

func (r *Reader) pathString() string {
	if len(r.path) == 0 {
		return "/"
	}

	return string(r.path)
}

// invalid returns a format error at the current path (r.path).
func (r *Reader) invalid(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if r.started {
		msg = r.pathString() + ": " + msg
	}

	return fmt.Errorf("%w: %s", ErrInvalid, msg)
}

// ioErr wraps an error of the underlying reader; io.EOF becomes
// io.ErrUnexpectedEOF, as the archive is not complete yet whenever we read.
func (r *Reader) ioErr(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}

	if !r.started {
		return fmt.Errorf("nar: reading magic: %w", err)
	}

	return fmt.Errorf("nar: %s: %w", r.pathString(), err)
}

// describe formats a token for error messages.
func describe(tok []byte, n uint64) string {
	if n > maxTokenLen {
		return "a token of " + strconv.FormatUint(n, 10) + " bytes"
	}

	return strconv.Quote(string(tok))
}

// padLen returns the length of the zero padding after n bytes of content.
func padLen(n uint64) int {
	return int((8 - n%8) % 8) //nolint:gosec // < 8
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}

	return true
}

// Validate reads a whole NAR from r, strictly, and returns its size. It does
// not read past the end of the NAR. On error, narSize is the number of bytes
// consumed before the error was detected.
func Validate(r io.Reader) (narSize int64, err error) {
	nr := NewReader(r)

	for {
		if _, err := nr.Next(); err != nil {
			if err == io.EOF {
				return nr.Offset(), nil
			}

			return nr.Offset(), err
		}
	}
}
