package artifact

import (
	"context"
	"log/slog"
	"time"

	"github.com/nixoci/nixoci/backend"
)

// Retries of whole operations (a blob upload, a manifest fetch) after
// transient failures the HTTP client could not retry itself, such as a
// connection reset in the middle of an upload body.
const (
	retryAttempts = 5
	retryFirst    = 500 * time.Millisecond
)

// retryTransient runs op until it succeeds, fails for a reason retrying
// will not fix, or has failed retryAttempts times.
func retryTransient(ctx context.Context, p *Progress, what string, op func() error) error {
	delay := retryFirst
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil || !backend.IsTransient(err) || attempt == retryAttempts || ctx.Err() != nil {
			return err
		}
		if p != nil {
			p.Retries.Add(1)
		}
		slog.Warn("transient failure, retrying", "what", what, "attempt", attempt, "in", delay, "err", err)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
		delay *= 2
	}
}
