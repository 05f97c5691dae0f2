package artifact

import (
	"os"

	"golang.org/x/sys/unix"
)

// anonymousTempFile returns a temporary file that has no name at any
// moment (O_TMPFILE), so that nothing is left behind however the process
// ends; where the file system cannot do that, a named file removed at
// once.
func anonymousTempFile(dir string) (*os.File, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	if f, err := os.OpenFile(dir, unix.O_TMPFILE|os.O_RDWR, 0o600); err == nil {
		return f, nil
	}
	return namedThenRemoved(dir)
}
