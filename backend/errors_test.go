package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// Every remote target is a Target.
var _ Target = (*remoteTarget)(nil)

var conditions = []error{ErrUnreachable, ErrUnauthorized, ErrDenied, ErrRegistry}

func errorResponse(status int) error {
	u, _ := url.Parse("https://registry.example/v2/me/nix/manifests/dev")
	return &errcode.ErrorResponse{Method: http.MethodGet, URL: u, StatusCode: status}
}

// headerTimeout is like net/http's "timeout awaiting response headers":
// a net.Error that also matches context.DeadlineExceeded.
type headerTimeout struct{}

func (headerTimeout) Error() string        { return "net/http: timeout awaiting response headers" }
func (headerTimeout) Timeout() bool        { return true }
func (headerTimeout) Temporary() bool      { return true }
func (headerTimeout) Is(target error) bool { return target == context.DeadlineExceeded }

// refusedError is a real "connection refused" from the net/http stack.
func refusedError(t *testing.T) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	resp, err := http.Get("http://" + addr + "/v2/")
	if err == nil {
		resp.Body.Close()
		t.Skipf("something answered on the closed port %s", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dialing a closed port: %v, want ECONNREFUSED", err)
	}
	return err
}

func TestClassify(t *testing.T) {
	const name = "registry.example/me/nix"
	tests := []struct {
		desc string
		err  error
		want error // the condition, or nil for none
	}{
		{"401", errorResponse(http.StatusUnauthorized), ErrUnauthorized},
		{"403", errorResponse(http.StatusForbidden), ErrDenied},
		{"500", errorResponse(http.StatusInternalServerError), ErrRegistry},
		{"502", errorResponse(http.StatusBadGateway), ErrRegistry},
		{"503 wrapped", fmt.Errorf("pushing: %w", errorResponse(http.StatusServiceUnavailable)), ErrRegistry},
		{"429", errorResponse(http.StatusTooManyRequests), ErrRegistry},
		{"400", errorResponse(http.StatusBadRequest), nil},
		{"400 manifest blob unknown", &errcode.ErrorResponse{Method: http.MethodPut, StatusCode: http.StatusBadRequest,
			URL:    &url.URL{Scheme: "https", Host: "registry.example", Path: "/v2/me/nix/manifests/dev"},
			Errors: errcode.Errors{{Code: errcode.ErrorCodeManifestBlobUnknown}}}, ErrRegistry},
		{"header timeout", &url.Error{Op: "Put", URL: "https://registry.example/v2/", Err: headerTimeout{}}, ErrUnreachable},
		{"connection refused", refusedError(t), ErrUnreachable},
		{"syscall ECONNREFUSED", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, ErrUnreachable},
		{"connection reset", fmt.Errorf("read: %w", syscall.ECONNRESET), ErrUnreachable},
		{"unexpected EOF", fmt.Errorf("reading body: %w", io.ErrUnexpectedEOF), ErrUnreachable},
		{"DNS", &url.Error{Op: "Get", URL: "https://nowhere.invalid/v2/", Err: &net.DNSError{Err: "no such host", Name: "nowhere.invalid", IsNotFound: true}}, ErrUnreachable},
		{"no credentials", fmt.Errorf("auth: %w", auth.ErrBasicCredentialNotFound), ErrUnauthorized},
		{"not found", fmt.Errorf("dev: %w", errdef.ErrNotFound), nil},
		{"canceled", fmt.Errorf("get: %w", context.Canceled), nil},
		{"deadline", context.DeadlineExceeded, nil},
		{"other", errors.New("something else"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			ctx := context.Background()
			if errors.Is(tt.err, context.Canceled) || errors.Is(tt.err, context.DeadlineExceeded) && tt.want == nil {
				// The caller's own context ended.
				c, cancel := context.WithCancel(ctx)
				cancel()
				ctx = c
			}
			got := classify(ctx, name, "resolving dev", tt.err)
			if got == nil {
				t.Fatal("classify returned nil for an error")
			}
			if !errors.Is(got, tt.err) {
				t.Errorf("classify(%v) = %v, which does not wrap the original error", tt.err, got)
			}
			for _, c := range conditions {
				if want := c == tt.want; errors.Is(got, c) != want {
					t.Errorf("classify(%v) = %v: errors.Is(%v) = %v, want %v", tt.err, got, c, !want, want)
				}
			}
			if msg := got.Error(); !strings.HasPrefix(msg, name+": resolving dev: ") {
				t.Errorf("classify message %q does not start with the target name and operation", msg)
			}
			if tt.want == ErrUnauthorized && !strings.Contains(got.Error(), "login") {
				t.Errorf("unauthorized error %q has no hint on how to log in", got)
			}
		})
	}
	if err := classify(context.Background(), name, "x", nil); err != nil {
		t.Errorf("classify(nil) = %v, want nil", err)
	}
	// Not found stays not found, whatever else it is wrapped in.
	err := classify(context.Background(), name, "fetching", fmt.Errorf("manifest: %w", errdef.ErrNotFound))
	if !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("classify lost errdef.ErrNotFound: %v", err)
	}
}

// TestRemoteTargetClassifies talks to a fake registry: the remote target's
// methods return classified errors naming the repository.
func TestRemoteTargetClassifies(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // no credentials from the user's config
	SetRetrySleep(t, func(context.Context, time.Duration) bool { return true })
	tests := []struct {
		status int
		want   error
	}{
		{http.StatusUnauthorized, ErrUnauthorized},
		{http.StatusForbidden, ErrDenied},
		{http.StatusInternalServerError, ErrRegistry},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tt.status)
				fmt.Fprint(w, `{"errors":[{"code":"DENIED","message":"no"}]}`)
			}))
			defer srv.Close()
			host := strings.TrimPrefix(srv.URL, "http://")
			ref, err := ParseRef(host + "/me/nix")
			if err != nil {
				t.Fatal(err)
			}
			tgt, err := Open(t.Context(), ref, Options{HTTPClient: srv.Client()})
			if err != nil {
				t.Fatal(err)
			}
			_, err = tgt.Resolve(t.Context(), "dev")
			if !errors.Is(err, tt.want) {
				t.Errorf("Resolve error = %v, want %v", err, tt.want)
			}
			if err != nil && !strings.Contains(err.Error(), host+"/me/nix") {
				t.Errorf("Resolve error %q does not name the repository", err)
			}
		})
	}

	t.Run("unreachable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		host := ln.Addr().String()
		ln.Close()
		ref, _ := ParseRef(host + "/me/nix")
		tgt, err := Open(t.Context(), ref, Options{HTTPClient: &http.Client{}})
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = tgt.FetchReference(t.Context(), "dev")
		if !errors.Is(err, ErrUnreachable) {
			t.Errorf("FetchReference error = %v, want ErrUnreachable", err)
		}
		if errors.Is(err, errdef.ErrNotFound) {
			t.Errorf("an unreachable registry reported not found: %v", err)
		}
	})

	t.Run("not found", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		defer srv.Close()
		ref, _ := ParseRef(strings.TrimPrefix(srv.URL, "http://") + "/me/nix")
		tgt, err := Open(t.Context(), ref, Options{HTTPClient: srv.Client()})
		if err != nil {
			t.Fatal(err)
		}
		_, err = tgt.Resolve(t.Context(), "dev")
		if !errors.Is(err, errdef.ErrNotFound) {
			t.Errorf("Resolve error = %v, want errdef.ErrNotFound", err)
		}
		for _, c := range conditions {
			if errors.Is(err, c) {
				t.Errorf("not found classified as %v: %v", c, err)
			}
		}
	})
}

func TestRemotePing(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	SetRetrySleep(t, func(context.Context, time.Duration) bool { return true })
	tests := []struct {
		status int
		want   error // nil: Ping succeeds
	}{
		{http.StatusOK, nil},
		{http.StatusUnauthorized, ErrUnauthorized},
		{http.StatusServiceUnavailable, ErrRegistry},
	}
	for _, tt := range tests {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v2/" {
				http.NotFound(w, r)
				return
			}
			w.WriteHeader(tt.status)
			fmt.Fprint(w, "{}")
		}))
		ref, _ := ParseRef(strings.TrimPrefix(srv.URL, "http://") + "/me/nix")
		tgt, err := Open(t.Context(), ref, Options{HTTPClient: srv.Client()})
		if err != nil {
			t.Fatal(err)
		}
		err = tgt.Ping(t.Context())
		srv.Close()
		if tt.want == nil && err != nil {
			t.Errorf("status %d: Ping error %v", tt.status, err)
		}
		if tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("status %d: Ping error = %v, want %v", tt.status, err, tt.want)
		}
	}
}

// TestRedactURLString: user info (passwords, tokens as user names) and
// query strings but a digest never survive, parseable or not.
func TestRedactURLString(t *testing.T) {
	for in, want := range map[string]string{
		"http://user:pa55@cache.example/nix":                             "http://cache.example/nix",
		"https://tok3n@cache.example/":                                   "https://cache.example/",
		"https://s3.example/b/x?X-Amz-Signature=s3cr3t&digest=sha256:ab": "https://s3.example/b/x?digest=sha256%3Aab",
		"http://user:pa ss@cache.example/x?t=s3cr3t":                     "http://cache.example/x",
		"http://user:pa/55@cache.example/x":                              "http://cache.example/x",
		"http://cache.example/nix":                                       "http://cache.example/nix",
	} {
		got := RedactURLString(in)
		if got != want {
			t.Errorf("RedactURLString(%q) = %q, want %q", in, got, want)
		}
		for _, secret := range []string{"pa55", "tok3n", "s3cr3t", "pa ss"} {
			if strings.Contains(got, secret) {
				t.Errorf("RedactURLString(%q) = %q keeps %q", in, got, secret)
			}
		}
	}
}

// TestClassifyRedacts: registry errors are redacted before they are
// wrapped: a redirect's signed URL or a URL's user info never reaches a
// message.
func TestClassifyRedacts(t *testing.T) {
	ue := &url.Error{Op: "Get", URL: "https://s3.example/blob?X-Amz-Credential=AKIAxyz&X-Amz-Signature=s3cr3t", Err: syscall.ECONNRESET}
	resp := &errcode.ErrorResponse{Method: "GET", URL: &url.URL{Scheme: "https", Host: "s3.example", Path: "/b", RawQuery: "X-Amz-Signature=s3cr3t", User: url.UserPassword("u", "pa55")}, StatusCode: 403}
	for _, err := range []error{ue, resp} {
		msg := classify(context.Background(), "reg.example/repo", "fetch", err).Error()
		for _, secret := range []string{"s3cr3t", "AKIAxyz", "pa55"} {
			if strings.Contains(msg, secret) {
				t.Errorf("classified error keeps %q: %s", secret, msg)
			}
		}
	}
}
