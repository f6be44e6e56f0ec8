package cluster

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// unmountAll unmounts path until nothing is mounted there (a file can carry several
// stacked mounts if an earlier run was interrupted).
func unmountAll(path string) error {
	for i := 0; i < 16; i++ {
		err := unix.Unmount(path, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil // not a mount point (any more)
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", path, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted after 16 unmounts", path)
}
