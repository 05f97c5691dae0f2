//go:build linux

package serving

import (
	"io"
	"os"
	"syscall"
)

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
