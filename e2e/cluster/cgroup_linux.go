package cluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const cgroupFS = "/sys/fs/cgroup"

// cgroupHierarchies lists the mounted cgroup hierarchies (v1 controllers, named v1
// hierarchies and the v2 unified one on hybrid hosts).
func cgroupHierarchies() ([]string, error) {
	ents, err := os.ReadDir(cgroupFS)
	if err != nil {
		return nil, err
	}
	var hs []string
	for _, e := range ents {
		p := filepath.Join(cgroupFS, e.Name())
		if fi, err := os.Lstat(p); err != nil || !fi.IsDir() {
			continue // cpu,cpuacct style symlinks point at a hierarchy already listed
		}
		if _, err := os.Stat(filepath.Join(p, "cgroup.procs")); err == nil {
			hs = append(hs, p)
		}
	}
	if len(hs) == 0 {
		return nil, fmt.Errorf("no cgroup hierarchies under %s", cgroupFS)
	}
	return hs, nil
}

// createCgroups makes name in every hierarchy. cpuset children start empty and refuse
// tasks, so they get the parent's cpus and mems.
func createCgroups(name string) error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		dir := filepath.Join(h, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
					return fmt.Errorf("set %s/%s: %w", dir, f, err)
				}
			}
		}
	}
	return nil
}

// cgroupDirs returns name's directory in every hierarchy (what a process joins).
func cgroupDirs(name string) ([]string, error) {
	hs, err := cgroupHierarchies()
	if err != nil {
		return nil, err
	}
	dirs := make([]string, len(hs))
	for i, h := range hs {
		dirs[i] = filepath.Join(h, name)
	}
	return dirs, nil
}

// cgroupPids lists every process in the tree rooted at name, from the pids hierarchy
// (or the first hierarchy if there is none).
func cgroupPids(name string) ([]int, error) {
	hs, err := cgroupHierarchies()
	if err != nil {
		return nil, err
	}
	root := filepath.Join(hs[0], name)
	for _, h := range hs {
		if filepath.Base(h) == "pids" {
			root = filepath.Join(h, name)
		}
	}
	var pids []int
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed while walking
		}
		if err != nil {
			return err
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids, err
}

// killCgroup SIGKILLs every process in the tree rooted at name until it is empty. Only
// processes Up placed there (and their children) can be in it.
func killCgroup(ctx context.Context, name string, timeout time.Duration) error {
	return poll(ctx, "cgroup "+name+" to empty", timeout, func() error {
		pids, err := cgroupPids(name)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		return fmt.Errorf("%d processes left", len(pids))
	})
}

// removeCgroups removes name and everything below it in every hierarchy, deepest first.
func removeCgroups(name string) error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hs {
		root := filepath.Join(h, name)
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}

// otherNodeCgroups lists the system cgroups of nodes of any cluster still on this
// machine (ours are gone by the time Down asks).
func otherNodeCgroups() []string {
	m, _ := filepath.Glob(filepath.Join(cgroupFS, "pids", "*-n[0-9].sys"))
	return m
}
