package backend

import (
	"context"
	"time"
)

// SetRetrySleep makes retries call f instead of waiting, until the test
// ends, so that tests count and check waits without sleeping.
func SetRetrySleep(t interface{ Cleanup(func()) }, f func(ctx context.Context, d time.Duration) bool) {
	old := sleep
	sleep = f
	t.Cleanup(func() { sleep = old })
}

// TagBatch is the most tags one call of a listing's callback gets.
const TagBatch = tagBatch
