package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/ambit-mesh/ambit/internal/netns"
)

// run executes a short command and returns its error with the command's output.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// inNetns runs a short command inside a network namespace. nsenter is used rather than
// `ip netns exec`, which remounts /sys.
func inNetns(ctx context.Context, netns string, args ...string) error {
	return run(ctx, "nsenter", append([]string{"--net=" + netnsPath(netns), "--"}, args...)...)
}

func netnsExists(name string) bool {
	_, err := os.Stat(netnsPath(name))
	return err == nil
}

// setupNetwork creates the control-plane namespace with its bridge and one namespace per
// node joined to it by a veth pair, with static routes for pod and service ranges. No
// namespace gets a default route, so nothing can leave the cluster.
func (c Config) setupNetwork(ctx context.Context) error {
	// `ip netns add` turns /run/netns into a shared bind mount of itself the first time;
	// remember whether we caused that so Down can undo it.
	if !isMountPoint("/run/netns") {
		if err := os.WriteFile(c.netnsMountMarker(), nil, 0o644); err != nil {
			return err
		}
	}
	cp, br := c.cpNetns(), c.bridge()
	steps := [][]string{
		{"ip", "netns", "add", cp},
		{"ip", "-n", cp, "link", "set", "lo", "up"},
		{"ip", "-n", cp, "link", "add", br, "type", "bridge"},
		{"ip", "-n", cp, "addr", "add", fmt.Sprintf("%s/%d", apiServerAddr, linkPrefix.Bits()), "dev", br},
		{"ip", "-n", cp, "link", "set", br, "up"},
	}
	for _, n := range c.nodes() {
		peer := fmt.Sprintf("%s-v%d", c.Prefix, n.Index)
		steps = append(steps,
			[]string{"ip", "netns", "add", n.Netns},
			[]string{"ip", "-n", n.Netns, "link", "set", "lo", "up"},
			[]string{"ip", "-n", cp, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", n.Netns},
			[]string{"ip", "-n", cp, "link", "set", peer, "master", br, "up"},
			[]string{"ip", "-n", n.Netns, "addr", "add", fmt.Sprintf("%s/%d", n.IP, linkPrefix.Bits()), "dev", "eth0"},
			[]string{"ip", "-n", n.Netns, "link", "set", "eth0", "up"},
			// Host-network clients (kubelet, node agents) dial Service VIPs; kube-proxy
			// DNATs them in OUTPUT, but the first route lookup needs a route.
			[]string{"ip", "-n", n.Netns, "route", "add", serviceCIDR.String(), "dev", "eth0"},
			[]string{"ip", "-n", cp, "route", "add", n.PodCIDR.String(), "via", n.IP.String()},
		)
		for _, o := range c.nodes() {
			if o.Index != n.Index {
				steps = append(steps, []string{"ip", "-n", n.Netns, "route", "add", o.PodCIDR.String(), "via", o.IP.String()})
			}
		}
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	for _, ns := range append([]string{cp}, c.nodeNetnsNames()...) {
		if err := inNetns(ctx, ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"); err != nil {
			return err
		}
	}
	return nil
}

func (c Config) nodeNetnsNames() []string {
	var names []string
	for _, n := range c.nodes() {
		names = append(names, n.Netns)
	}
	return names
}

// teardownNetwork deletes the namespaces Up created; deleting a namespace deletes the
// interfaces and routes inside it.
func (c Config) teardownNetwork(ctx context.Context) error {
	var errs []string
	for _, ns := range append(c.nodeNetnsNames(), c.cpNetns()) {
		if !netnsExists(ns) {
			continue
		}
		if err := run(ctx, "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("delete network namespaces: %s", strings.Join(errs, "; "))
	}
	if _, err := os.Stat(c.netnsMountMarker()); err == nil {
		if ents, err := os.ReadDir("/run/netns"); err == nil && len(ents) == 0 {
			if err := unmountAll("/run/netns"); err != nil {
				return err
			}
		}
		return os.Remove(c.netnsMountMarker())
	}
	return nil
}

func (c Config) netnsMountMarker() string {
	return filepath.Join(c.StateDir, "created-run-netns-mount")
}

// isMountPoint reports whether path is the mount point of a mount in this namespace.
func isMountPoint(path string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && unescapeMount(f[4]) == path {
			return true
		}
	}
	return false
}

// dialInNetns opens a TCP connection from inside the named network namespace.
func dialInNetns(ctx context.Context, name, addr string) (net.Conn, error) {
	h, err := netns.Open(netnsPath(name))
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return h.Dial(ctx, addr, netns.SocketOptions{})
}
