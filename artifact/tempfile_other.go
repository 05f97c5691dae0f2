//go:build !linux

package artifact

import "os"

// anonymousTempFile returns a temporary file removed at once (it lives
// while open).
func anonymousTempFile(dir string) (*os.File, error) { return namedThenRemoved(dir) }
