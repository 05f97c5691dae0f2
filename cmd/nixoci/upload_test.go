package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nixoci/nixoci/backend"
)

func TestChunkSizeFlag(t *testing.T) {
	for _, tc := range []struct {
		in        string
		want      int64 // Options.ChunkSize
		shown     string
		wantError bool
	}{
		{"8MiB", 8 << 20, "8MiB", false},
		{"4MiB", 4 << 20, "4MiB", false},
		{"1048576", 1 << 20, "1MiB", false},
		{"10MB", 10e6, "10000000", false},
		{"0", -1, "0", false}, // one request per blob
		{"8 furlongs", 0, "", true},
		{"-1MiB", 0, "", true},
	} {
		var s byteSize
		err := s.Set(tc.in)
		if (err != nil) != tc.wantError {
			t.Errorf("Set(%q): %v, want error %v", tc.in, err, tc.wantError)
			continue
		}
		if err != nil {
			continue
		}
		var o backend.Options
		s.option()(&o)
		if o.ChunkSize != tc.want || s.String() != tc.shown {
			t.Errorf("%q: ChunkSize %d shown %q, want %d, %q", tc.in, o.ChunkSize, s.String(), tc.want, tc.shown)
		}
	}
}

func TestChunkHint(t *testing.T) {
	tooLarge := fmt.Errorf("pushing: %w", backend.ErrBodyTooLarge)
	if err := chunkHint(tooLarge); !errors.Is(err, backend.ErrBodyTooLarge) || !strings.Contains(err.Error(), "--chunk-size") {
		t.Errorf("chunkHint(413) = %v, want the flag named and the error kept", err)
	}
	other := errors.New("refused")
	if err := chunkHint(other); err != other {
		t.Errorf("chunkHint(other) = %v, want it unchanged", err)
	}
}

func TestEnvCredentials(t *testing.T) {
	for _, tc := range []struct {
		user, password string
		set, usage     bool
	}{
		{"", "", false, false},
		{"nix", "pw", true, false},
		{"nix", "", false, true},
		{"", "pw", false, true},
	} {
		t.Setenv(envRegistryUser, tc.user)
		t.Setenv(envRegistryPassword, tc.password)
		opt, err := envCredentials()
		if tc.usage != errors.Is(err, errUsage) || (opt != nil) != tc.set {
			t.Errorf("user %q password %q: option %v, err %v", tc.user, tc.password, opt != nil, err)
			continue
		}
		if opt == nil {
			continue
		}
		var o backend.Options
		opt(&o)
		cred, err := o.Credentials(context.Background(), "registry.example")
		if err != nil || cred.Username != tc.user || cred.Password != tc.password {
			t.Errorf("credentials %+v, %v", cred, err)
		}
	}
}
