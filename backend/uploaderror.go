package backend

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"oras.land/oras-go/v2/registry/remote/errcode"
)

// ErrBodyTooLarge: a request body was refused as too large (413), which
// on a registry almost always means a proxy in front of it with a body
// limit (nginx's client_max_body_size, Cloudflare's 100 MB, Cloud Run's
// 32 MB). Smaller chunks pass (Options.ChunkSize).
var ErrBodyTooLarge = errors.New("request body too large for a proxy; upload in smaller chunks")

// maxErrorBody bounds how much of an error response is read.
const maxErrorBody = 8 << 10

// answerError describes a registry's unexpected answer to req: method,
// URL (redacted), status and the distribution error codes and messages
// of its body, as oras-go's errcode.ErrorResponse. A 413 also wraps
// ErrBodyTooLarge.
func answerError(resp *http.Response) error {
	e := &errcode.ErrorResponse{
		Method:     resp.Request.Method,
		URL:        redactURL(resp.Request.URL),
		StatusCode: resp.StatusCode,
	}
	var body struct {
		Errors errcode.Errors `json:"errors"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, maxErrorBody)).Decode(&body) == nil {
		e.Errors = body.Errors
	}
	if e.StatusCode == http.StatusRequestEntityTooLarge {
		return fmt.Errorf("%w: %w", ErrBodyTooLarge, e)
	}
	return e
}

// uploadError adds what a caller needs to know to an error from an
// upload: ErrBodyTooLarge for a 413, and redacted URLs (see
// RedactError). Errors wrapping those have their messages made
// already, so it is applied where requests fail.
func uploadError(err error) error {
	err = RedactError(err)
	var resp *errcode.ErrorResponse
	if errors.As(err, &resp) && resp.StatusCode == http.StatusRequestEntityTooLarge && !errors.Is(err, ErrBodyTooLarge) {
		return fmt.Errorf("%w: %w", ErrBodyTooLarge, err)
	}
	return err
}

// RedactError removes what may be secret from the request URLs of the
// HTTP errors in err's chain (net/http's *url.Error, oras-go's
// *errcode.ErrorResponse), in place, and returns err: their user info
// (a password, or a token given as a user name) and their query
// strings but a digest (upload URLs carry the registry's session
// state; a registry's redirect to its storage carries a signature).
// net/http hides only a password. Apply it before wrapping: the
// messages of errors that wrap err are made already.
func RedactError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = RedactURLString(ue.URL)
	}
	var resp *errcode.ErrorResponse
	if errors.As(err, &resp) {
		resp.URL = redactURL(resp.URL)
	}
	return err
}

// RedactURLString is RedactURL of a URL in text. Of text that does not
// parse as a URL (a password with a space, say), what precedes its last
// @ and its query are dropped.
func RedactURLString(s string) string {
	if u, err := url.Parse(s); err == nil {
		return RedactURL(u)
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		scheme, rest = "", s
	}
	rest, _, _ = strings.Cut(rest, "?")
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		rest = rest[i+1:]
	}
	if !ok {
		return rest
	}
	return scheme + "://" + rest
}

// RedactURL is u as text for messages, without its user info and with
// only the digest of its query (see RedactError).
func RedactURL(u *url.URL) string { return redactURL(u).String() }

// redactURL is u without user info and with only the digest of its query.
func redactURL(u *url.URL) *url.URL {
	if u == nil {
		return nil
	}
	r := *u
	r.User = nil
	r.RawQuery = ""
	if d := u.Query().Get("digest"); d != "" {
		r.RawQuery = url.Values{"digest": {d}}.Encode()
	}
	return &r
}
