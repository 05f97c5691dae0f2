package substituter

import (
	"io"
	"os"
	"syscall"
	"time"
)

// verifiedTTL bounds how long a verified file identity is trusted
// without hashing the file again.
const verifiedTTL = time.Hour

// fileID identifies one version of a file: the same inode with the same
// size, modification time and change time. Any write to the file changes
// its change time, which no user can set back, so a blob file with the
// identity it had when it was hashed still holds those bytes.
type fileID struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64
}

// fileIdentity returns the identity of rc if it is an open regular file.
func fileIdentity(rc io.Reader) (*os.File, fileID, bool) {
	f, ok := rc.(*os.File)
	if !ok {
		return nil, fileID{}, false
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return nil, fileID{}, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, fileID{}, false
	}
	return f, fileID{
		dev: uint64(st.Dev), ino: st.Ino, size: st.Size,
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano(),
	}, true
}
