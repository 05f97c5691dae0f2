package backend

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

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
// upload: ErrBodyTooLarge for a 413, and, in the answer or transport
// error err is, request URLs without their query strings (upload URLs
// carry the registry's session state, and may carry signatures), the
// digest excepted. Errors wrapping those have their messages made
// already, so it is applied where requests fail.
func uploadError(err error) error {
	switch e := err.(type) {
	case *url.Error:
		if u, perr := url.Parse(e.URL); perr == nil {
			e.URL = redactURL(u).String()
		}
	case *errcode.ErrorResponse:
		e.URL = redactURL(e.URL)
	}
	var resp *errcode.ErrorResponse
	if errors.As(err, &resp) && resp.StatusCode == http.StatusRequestEntityTooLarge && !errors.Is(err, ErrBodyTooLarge) {
		return fmt.Errorf("%w: %w", ErrBodyTooLarge, err)
	}
	return err
}

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
