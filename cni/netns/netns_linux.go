package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	ambitnetns "github.com/ambit-mesh/ambit/internal/netns"
)

// ErrNotFound is returned when no process of the pod was found.
var ErrNotFound = errors.New("pod network namespace not found")

// Open opens the network namespace at path (a bind-mounted nsfs file or
// /proc/<pid>/ns/net) and checks that it is one.
func Open(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open netns: %w", err)
	}
	if err := Check(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// Check reports whether f is a network namespace.
func Check(f *os.File) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("statfs: %w", err)
	}
	if st.Type != unix.NSFS_MAGIC {
		return errors.New("not a namespace file")
	}
	t, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil {
		return fmt.Errorf("namespace type: %w", err)
	}
	if t != unix.CLONE_NEWNET {
		return errors.New("not a network namespace")
	}
	return nil
}

// Inode identifies a namespace: two descriptors of one namespace have the same inode.
func Inode(f *os.File) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("stat netns: %w", err)
	}
	return st.Ino, nil
}

// Do runs fn on an OS thread that has entered the network namespace f (see
// internal/netns: the thread returns home before anything else runs on it).
func Do(f *os.File, fn func() error) error { return ambitnetns.Do(f, fn) }

// Finder locates running pods' network namespaces from the process table.
type Finder struct {
	// Proc is the procfs mount of the host's PID namespace ("/proc" in a hostPID pod).
	Proc string
}

// Find returns the network namespace of the pod with uid, opened from one of its
// processes, or ErrNotFound. Processes sharing the caller's network namespace (a
// hostNetwork pod) are skipped.
func (fi Finder) Find(uid string) (*os.File, error) {
	own, err := os.Open(filepath.Join(fi.Proc, "self/ns/net"))
	if err != nil {
		return nil, fmt.Errorf("own netns: %w", err)
	}
	ownIno, err := Inode(own)
	own.Close()
	if err != nil {
		return nil, err
	}
	pids, err := fi.pods()
	if err != nil {
		return nil, err
	}
	for _, pid := range pids[uid] {
		f, err := Open(filepath.Join(fi.Proc, strconv.Itoa(pid), "ns/net"))
		if err != nil {
			continue // exited meanwhile
		}
		if ino, err := Inode(f); err == nil && ino != ownIno {
			return f, nil
		}
		f.Close()
	}
	return nil, fmt.Errorf("pod %s: %w", uid, ErrNotFound)
}

// pods maps pod UIDs to the pids of their processes.
func (fi Finder) pods() (map[string][]int, error) {
	ents, err := os.ReadDir(fi.Proc)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	out := map[string][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(fi.Proc, e.Name(), "cgroup"))
		if err != nil {
			continue
		}
		if uid := PodUIDFromCgroup(string(b)); uid != "" {
			out[uid] = append(out[uid], pid)
		}
	}
	return out, nil
}

// PodUIDFromCgroup extracts the pod UID from the contents of /proc/<pid>/cgroup, for
// the cgroupfs driver (.../pod<uid>/<container>) and the systemd driver
// (.../kubepods-besteffort-pod<uid_with_underscores>.slice/...). It returns "" for a
// process outside any pod.
func PodUIDFromCgroup(cgroup string) string {
	for _, line := range strings.Split(cgroup, "\n") {
		// hierarchy-ID:controllers:path
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, el := range strings.Split(parts[2], "/") {
			el = strings.TrimSuffix(el, ".slice")
			i := strings.LastIndex(el, "pod")
			if i < 0 {
				continue
			}
			if i > 0 && el[i-1] != '-' {
				continue
			}
			uid := strings.ReplaceAll(el[i+3:], "_", "-")
			if isUID(uid) {
				return uid
			}
		}
	}
	return ""
}

// isUID reports whether s looks like a Kubernetes UID (RFC 4122 text form).
func isUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdef", c) {
				return false
			}
		}
	}
	return true
}
