package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"

	"oras.land/oras-go/v2/registry/remote/errcode"
)

func uploadResponse(status int, codes ...string) *errcode.ErrorResponse {
	u, _ := url.Parse("http://127.0.0.1:5000/v2/nix/blobs/uploads/abc?_state=SECRET&digest=sha256%3A00")
	e := &errcode.ErrorResponse{Method: http.MethodPatch, URL: u, StatusCode: status}
	for _, c := range codes {
		e.Errors = append(e.Errors, errcode.Error{Code: c, Message: "m"})
	}
	return e
}

// TestUploadFailures: which answers end an upload, which are resumed,
// and which say the registry takes no chunks.
func TestUploadFailures(t *testing.T) {
	tests := []struct {
		name               string
		err                error
		resumable, refuses bool
	}{
		{"reset", fmt.Errorf("patch: %w", syscall.ECONNRESET), true, false},
		{"EOF", io.ErrUnexpectedEOF, true, false},
		{"body not rewindable after a 401", errors.New(`PATCH "…": request body is not rewindable`), true, false},
		{"500", uploadResponse(500), true, false},
		{"502 from a proxy", uploadResponse(502), true, false},
		{"429", uploadResponse(429), true, false},
		{"416 offset disagreement", uploadResponse(416), true, true},
		{"413", uploadResponse(413), false, false},
		{"401", uploadResponse(401, errcode.ErrorCodeUnauthorized), false, false},
		{"403", uploadResponse(403, errcode.ErrorCodeDenied), false, false},
		{"405 PATCH not allowed", uploadResponse(405), false, true},
		{"501", uploadResponse(501), true, true},
		{"404 from a proxy", uploadResponse(404), false, true},
		{"404 upload unknown", uploadResponse(404, errcode.ErrorCodeBlobUploadUnknown), false, false},
		{"400 unsupported", uploadResponse(400, errcode.ErrorCodeUnsupported), false, true},
		{"400 upload invalid", uploadResponse(400, errcode.ErrorCodeBlobUploadInvalid), false, false},
		{"bad answer", fmt.Errorf("x: %w", errBadAnswer), false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := resumable(context.Background(), tc.err); got != tc.resumable {
				t.Errorf("resumable = %v, want %v", got, tc.resumable)
			}
			if got := refusesChunks(tc.err); got != tc.refuses {
				t.Errorf("refusesChunks = %v, want %v", got, tc.refuses)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if resumable(ctx, syscall.ECONNRESET) {
		t.Error("resumable after the caller gave up")
	}
}

// TestUploadError: a 413 is ErrBodyTooLarge; upload URLs keep only
// their digest, in answers and in transport errors.
func TestUploadError(t *testing.T) {
	err := fmt.Errorf("pushing: %w", uploadError(uploadResponse(413)))
	if !errors.Is(err, ErrBodyTooLarge) {
		t.Errorf("413: %v, want ErrBodyTooLarge", err)
	}
	var resp *errcode.ErrorResponse
	if !errors.As(err, &resp) || resp.StatusCode != 413 {
		t.Errorf("413: the registry's answer is lost: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"PATCH", "/v2/nix/blobs/uploads/abc", "digest=sha256%3A00", "413", "upload in smaller chunks"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "SECRET") {
		t.Errorf("message %q shows the upload state", msg)
	}
	if errors.Is(uploadError(uploadResponse(400)), ErrBodyTooLarge) {
		t.Error("400 is ErrBodyTooLarge")
	}
	urlErr := uploadError(&url.Error{Op: "Patch", URL: "http://u:p@127.0.0.1:5000/v2/x/blobs/uploads/abc?_state=SECRET", Err: syscall.ECONNRESET})
	if s := urlErr.Error(); strings.Contains(s, "SECRET") || strings.Contains(s, "u:p") || !errors.Is(urlErr, syscall.ECONNRESET) {
		t.Errorf("transport error %q: want no query, no user info, ECONNRESET kept", s)
	}
}

// TestFollow: the session URL and offset from a registry's answer.
func TestFollow(t *testing.T) {
	base, _ := url.Parse("https://registry.example/v2/nix/blobs/uploads/")
	tests := []struct {
		name, location, rng string
		dflt                int64
		wantLoc             string
		wantOffset          int64
		wantErr             bool
	}{
		{"absolute", "https://registry.example/v2/nix/blobs/uploads/1?_state=s", "0-8388607", 0, "https://registry.example/v2/nix/blobs/uploads/1?_state=s", 8 << 20, false},
		{"relative", "/v2/nix/blobs/uploads/2", "", 42, "https://registry.example/v2/nix/blobs/uploads/2", 42, false},
		{"explicit port", "https://registry.example:443/v2/nix/blobs/uploads/3", "bytes=0-99", 0, "https://registry.example:443/v2/nix/blobs/uploads/3", 100, false},
		{"0-0 with nothing sent", "/v2/nix/blobs/uploads/4", "0-0", 0, "https://registry.example/v2/nix/blobs/uploads/4", 0, false},
		{"0-0 after one byte", "/v2/nix/blobs/uploads/4", "0-0", 1, "https://registry.example/v2/nix/blobs/uploads/4", 1, false},
		{"other host", "https://evil.example/v2/nix/blobs/uploads/5", "", 0, "", 0, true},
		{"downgrade", "http://registry.example/v2/nix/blobs/uploads/6", "", 0, "", 0, true},
		{"bad range", "/v2/nix/blobs/uploads/7", "5-9", 0, "", 0, true},
		{"no location at all", "", "", 0, "", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := &chunkedUpload{base: base}
			req, _ := http.NewRequest(http.MethodPatch, base.String()+"0", nil)
			resp := &http.Response{Request: req, Header: http.Header{}, Status: "202 Accepted"}
			if tc.location != "" {
				resp.Header.Set("Location", tc.location)
			}
			if tc.rng != "" {
				resp.Header.Set("Range", tc.rng)
			}
			err := u.follow(resp, tc.dflt)
			if tc.wantErr {
				if !errors.Is(err, errBadAnswer) {
					t.Fatalf("follow = %v, want errBadAnswer", err)
				}
				return
			}
			if err != nil || u.location.String() != tc.wantLoc || u.offset != tc.wantOffset {
				t.Errorf("follow: %v, location %v, offset %d; want %s, %d", err, u.location, u.offset, tc.wantLoc, tc.wantOffset)
			}
		})
	}
}
