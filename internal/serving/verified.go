package serving

import "time"

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
