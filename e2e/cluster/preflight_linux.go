package cluster

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// requirement is a program or file the cluster needs and how to get it.
type requirement struct {
	what    string // command name or absolute path
	install string
}

var requirements = []requirement{
	{"etcd", "apt-get install etcd-server"},
	{"containerd", "apt-get install containerd"},
	{"ctr", "apt-get install containerd"},
	{"runc", "apt-get install runc"},
	{"nsenter", "apt-get install util-linux"},
	{"unshare", "apt-get install util-linux"},
	{"ip", "apt-get install iproute2"},
	{"iptables", "apt-get install iptables"},
	{"sysctl", "apt-get install procps"},
	{"go", "install Go 1.26 at /usr/local/go and put /usr/local/go/bin on PATH"},
	{filepath.Join(debianCNIDir, "bridge"), "apt-get install containernetworking-plugins"},
	{filepath.Join(debianCNIDir, "host-local"), "apt-get install containernetworking-plugins"},
	{filepath.Join(debianCNIDir, "portmap"), "apt-get install containernetworking-plugins"},
	{filepath.Join(debianCNIDir, "loopback"), "apt-get install containernetworking-plugins"},
}

// ErrPreflight marks a machine that cannot run the cluster; its message lists every
// problem found and how to fix each.
var ErrPreflight = errors.New("preflight")

// preflight checks the machine before anything is created.
func (c Config) preflight() error {
	var problems []string
	if os.Geteuid() != 0 {
		problems = append(problems, "must run as root (network namespaces, mounts, cgroups)")
	}
	for _, r := range requirements {
		var err error
		if filepath.IsAbs(r.what) {
			_, err = os.Stat(r.what)
		} else {
			_, err = exec.LookPath(r.what)
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("missing %s: %s", r.what, r.install))
		}
	}
	if fs, err := os.ReadFile("/proc/filesystems"); err != nil || !strings.Contains(string(fs), "overlay") {
		problems = append(problems, "kernel lacks overlayfs (containerd's overlayfs snapshotter): modprobe overlay")
	}
	if p := cgroupProblem(); p != "" {
		problems = append(problems, p)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: this machine cannot run the local cluster:\n  - %s", ErrPreflight, strings.Join(problems, "\n  - "))
	}
	return nil
}

// cgroupProblem explains a cgroup layout the cluster does not handle. kubelet 1.33 runs
// on cgroup v1 (with a warning); the node isolation here relies on v1 hierarchies.
func cgroupProblem() string {
	if _, err := os.Stat(filepath.Join(cgroupFS, "cgroup.controllers")); err == nil {
		return "cgroup v2 only host (/sys/fs/cgroup is cgroup2): the local cluster needs the cgroup v1 or hybrid layout"
	}
	for _, ctl := range []string{"cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer"} {
		if _, err := os.Stat(filepath.Join(cgroupFS, ctl, "cgroup.procs")); err != nil {
			return fmt.Sprintf("cgroup v1 controller %q is not mounted at %s/%s", ctl, cgroupFS, ctl)
		}
	}
	return ""
}

// clashes reports names and ports another cluster or program already holds. It runs
// before anything is created, so a clash leaves nothing behind.
func (c Config) clashes() error {
	var problems []string
	for _, ns := range append([]string{c.cpNetns()}, c.nodeNetnsNames()...) {
		if netnsExists(ns) {
			problems = append(problems, fmt.Sprintf("network namespace %q already exists (another cluster? `ip netns del %s` if it is stale, or choose another --prefix)", ns, ns))
		}
	}
	for _, n := range c.nodes() {
		for _, cg := range []string{n.Cgroup, n.sysCgroup()} {
			if _, err := os.Stat(filepath.Join(cgroupFS, "pids", cg)); err == nil {
				problems = append(problems, fmt.Sprintf("cgroup %q already exists (another cluster, or a stale one)", cg))
			}
		}
	}
	ln, err := net.Listen("tcp", c.apiListen())
	if err != nil {
		problems = append(problems, fmt.Sprintf("cannot listen on %s for the API server forward: %v (choose another --api-port)", c.apiListen(), err))
	} else {
		ln.Close()
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: refusing to start, nothing was created:\n  - %s", ErrPreflight, strings.Join(problems, "\n  - "))
	}
	return nil
}
