package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// PauseImage is the sandbox image every node's containerd uses; Up imports it.
const PauseImage = "ambit.local/pause:3.10"

// Debian's containernetworking-plugins install here; each node gets a copy in its own
// /opt/cni/bin so that a chained plugin installed by a DaemonSet lands on that node only.
const debianCNIDir = "/usr/lib/cni"

func (n node) sysCgroup() string { return n.Cgroup + ".sys" }
func (n node) mntns() string     { return filepath.Join(n.Dir, "mntns") }
func (n node) root(p string) string {
	return filepath.Join(n.Dir, "root", hostPaths[p])
}

func daemonName(n node, what string) string { return fmt.Sprintf("%s-%s", n.Name, what) }

// startNode prepares one node (cgroups, mount namespace, configs) and starts its
// containerd; kubelet and kube-proxy start once images are imported.
func (c Config) startNode(ctx context.Context, n node) error {
	for _, cg := range []string{n.Cgroup, n.sysCgroup()} {
		if err := createCgroups(cg); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(n.Dir, 0o755); err != nil {
		return err
	}
	if err := c.createMountNamespace(ctx, n); err != nil {
		return err
	}
	if err := c.writeNodeConfigs(n); err != nil {
		return err
	}
	cgs, err := cgroupDirs(n.sysCgroup())
	if err != nil {
		return err
	}
	err = c.start(daemon{Name: daemonName(n, "containerd"), Netns: n.Netns, Mntns: n.mntns(), Cgroups: cgs,
		Argv: []string{"containerd", "--config", filepath.Join(n.Dir, "containerd.toml")}})
	if err != nil {
		return err
	}
	sock := filepath.Join(n.root("/run/containerd"), "containerd.sock")
	return poll(ctx, n.Name+" containerd", 30*time.Second, func() error {
		if _, ok := c.running(daemonName(n, "containerd")); !ok {
			return errDied(daemonName(n, "containerd"), c.logDir())
		}
		if _, err := os.Stat(sock); err != nil {
			return err
		}
		return c.inNode(ctx, n, "ctr", "--address", "/run/containerd/containerd.sock", "version")
	})
}

// inNode runs a short command in the node's network and mount namespaces.
func (c Config) inNode(ctx context.Context, n node, args ...string) error {
	return run(ctx, "nsenter", append([]string{"--net=" + netnsPath(n.Netns), "--mount=" + n.mntns(), "--"}, args...)...)
}

func (c Config) createMountNamespace(ctx context.Context, n node) error {
	f := n.mntns()
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		return err
	}
	if err := run(ctx, "unshare", "--mount="+f, "--propagation", "private", "true"); err != nil {
		return fmt.Errorf("create mount namespace for %s: %w", n.Name, err)
	}
	m, created, err := c.nodeMountsFor(n)
	if err := c.recordHostDirs(created); err != nil {
		return err
	}
	if err != nil {
		return err
	}
	arg, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := c.inNode(ctx, n, c.Helper, nodeInitCmd, string(arg)); err != nil {
		return fmt.Errorf("prepare mount namespace of %s: %w", n.Name, err)
	}
	// Every node carries Debian's CNI plugins in its own /opt/cni/bin.
	return copyDir(debianCNIDir, n.root("/opt/cni/bin"))
}

// recordHostDirs remembers directories created on the host for Down to remove.
func (c Config) recordHostDirs(dirs []string) error {
	if len(dirs) == 0 {
		return nil
	}
	f, err := os.OpenFile(filepath.Join(c.StateDir, "host-dirs"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(strings.Join(dirs, "\n") + "\n")
	return err
}

func copyDir(src, dst string) error {
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()), 0o755); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// startKubelet starts the node's kubelet and kube-proxy.
func (c Config) startKubelet(n node) error {
	cgs, err := cgroupDirs(n.sysCgroup())
	if err != nil {
		return err
	}
	err = c.start(daemon{Name: daemonName(n, "kubelet"), Netns: n.Netns, Mntns: n.mntns(), Cgroups: cgs,
		Argv: []string{c.kubeBin("kubelet"),
			"--config=" + filepath.Join(n.Dir, "kubelet.yaml"),
			"--kubeconfig=" + filepath.Join(n.Dir, "kubelet.kubeconfig"),
			"--cert-dir=" + filepath.Join(n.Dir, "kubelet-pki"),
			"--hostname-override=" + n.Name, "--node-ip=" + n.IP.String(),
			"--node-labels=ambit.dev/node-index=" + fmt.Sprint(n.Index),
			"--v=1"}})
	if err != nil {
		return err
	}
	return c.start(daemon{Name: daemonName(n, "kube-proxy"), Netns: n.Netns, Mntns: n.mntns(), Cgroups: cgs,
		Argv: []string{c.kubeBin("kube-proxy"), "--config=" + filepath.Join(n.Dir, "kube-proxy.yaml"), "--v=1"}})
}

// stopNode kills everything in the node's cgroups (containerd shims outlive containerd
// and leave no pid file, so the cgroup is the only complete list), drops the mount
// namespace with every overlay, tmpfs and netns mount inside it, and removes the
// cgroups.
func (c Config) stopNode(ctx context.Context, n node) error {
	var errs []error
	for _, d := range []string{"kube-proxy", "kubelet", "containerd"} {
		errs = append(errs, c.stop(ctx, daemonName(n, d), 5*time.Second))
	}
	for _, cg := range []string{n.Cgroup, n.sysCgroup()} {
		errs = append(errs, killCgroup(ctx, cg, 30*time.Second))
	}
	if _, err := os.Stat(n.mntns()); err == nil {
		if err := unmountAll(n.mntns()); err != nil {
			errs = append(errs, err)
		}
	}
	for _, cg := range []string{n.Cgroup, n.sysCgroup()} {
		errs = append(errs, removeCgroups(cg))
	}
	return errors.Join(errs...)
}
