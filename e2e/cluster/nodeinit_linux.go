package cluster

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// nodeInitCmd is the hidden subcommand that prepares a node's mount namespace; it runs
// inside that namespace (and the node's network namespace) through nsenter.
const nodeInitCmd = "__node-init"

// NodeInitCommand reports whether args (without the program name) ask for the node
// mount-namespace setup; main dispatches them to NodeInit.
func NodeInitCommand(args []string) bool { return len(args) > 0 && args[0] == nodeInitCmd }

// nodeMounts is what a node's mount namespace looks like; it travels as JSON to the
// __node-init subcommand.
type nodeMounts struct {
	// Binds maps a path kubelet, containerd or CNI hard-code to the node's own directory.
	Binds map[string]string
	// Sysctls maps a global /proc/sys file to a file holding the value kubelet insists
	// on, so kubelet is satisfied without changing the host's kernel settings.
	Sysctls map[string]string
	// Scratch is an empty directory used while /sys is remounted.
	Scratch string
}

// hostPaths are the node-local paths that get a per-node directory, by the name of that
// directory under the node's root.
var hostPaths = map[string]string{
	"/var/lib/kubelet":    "var-lib-kubelet",
	"/var/lib/containerd": "var-lib-containerd",
	"/run/containerd":     "run-containerd",
	"/var/log/pods":       "var-log-pods",
	"/var/log/containers": "var-log-containers",
	"/var/lib/cni":        "var-lib-cni",
	"/etc/cni/net.d":      "etc-cni-net.d",
	"/opt/cni/bin":        "opt-cni-bin",
	"/run/ambit":          "run-ambit", // node agent <-> ztunnel sockets
}

// kubeletSysctls are the global settings kubelet otherwise writes at start
// (pkg/kubelet/cm setupKernelTunables); each node sees these values instead.
var kubeletSysctls = map[string]string{
	"/proc/sys/vm/overcommit_memory": "1",
	"/proc/sys/vm/panic_on_oom":      "0",
	"/proc/sys/kernel/panic":         "10",
	"/proc/sys/kernel/panic_on_oops": "1",
}

// NodeInit runs inside a fresh node mount namespace (private propagation) and the node's
// network namespace. It drops the namespace files inherited from the host (so a node
// never pins another's namespaces), remounts /sys so the node sees only its own
// interfaces while keeping the host's cgroup mounts, binds the node's directories over
// the hard-coded paths, and masks kubelet's global sysctls.
func NodeInit(args []string) error {
	if len(args) != 2 {
		return errors.New(nodeInitCmd + ": want one JSON argument")
	}
	var m nodeMounts
	if err := json.Unmarshal([]byte(args[1]), &m); err != nil {
		return fmt.Errorf("%s: %w", nodeInitCmd, err)
	}
	if err := dropNsfsMounts(); err != nil {
		return err
	}
	if err := remountSys(m.Scratch); err != nil {
		return err
	}
	for target, src := range m.Binds {
		if err := os.MkdirAll(src, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s over %s: %w", src, target, err)
		}
	}
	for target, src := range m.Sysctls {
		if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s over %s: %w", src, target, err)
		}
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("make %s read-only: %w", target, err)
		}
	}
	return nil
}

func dropNsfsMounts() error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var targets []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Fields: id parent major:minor root mountpoint options... - fstype source super
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, fld := range fields {
			if fld == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) || len(fields) < 5 {
			continue
		}
		if fields[sep+1] == "nsfs" {
			targets = append(targets, unescapeMount(fields[4]))
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	for _, t := range targets {
		if err := unix.Unmount(t, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmount inherited %s: %w", t, err)
		}
	}
	return nil
}

// unescapeMount decodes the octal escapes mountinfo uses for spaces and the like.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func remountSys(scratch string) error {
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("/sys/fs/cgroup", scratch, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("keep cgroup mounts: %w", err)
	}
	if err := unix.Unmount("/sys", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount /sys: %w", err)
	}
	if err := unix.Mount("sysfs", "/sys", "sysfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount node sysfs: %w", err)
	}
	if err := unix.Mount(scratch, "/sys/fs/cgroup", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("restore cgroup mounts: %w", err)
	}
	return nil
}

// nodeMountsFor computes the node's mount layout and writes the sysctl value files. It
// reports which bind targets it had to create on the host so Down can remove them.
func (c Config) nodeMountsFor(n node) (nodeMounts, []string, error) {
	m := nodeMounts{Binds: map[string]string{}, Sysctls: map[string]string{}, Scratch: filepath.Join(n.Dir, "scratch")}
	var created []string
	for target, name := range hostPaths {
		if _, err := os.Stat(target); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(target, 0o755); err != nil {
				return m, created, err
			}
			created = append(created, target)
		}
		m.Binds[target] = filepath.Join(n.Dir, "root", name)
	}
	dir := filepath.Join(n.Dir, "sysctl")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return m, created, err
	}
	for target, want := range kubeletSysctls {
		cur, err := os.ReadFile(target)
		if err != nil {
			return m, created, err
		}
		if strings.TrimSpace(string(cur)) == want {
			continue
		}
		f := filepath.Join(dir, strings.ReplaceAll(strings.TrimPrefix(target, "/proc/sys/"), "/", "."))
		if err := os.WriteFile(f, []byte(want+"\n"), 0o444); err != nil {
			return m, created, err
		}
		m.Sysctls[target] = f
	}
	return m, created, nil
}
