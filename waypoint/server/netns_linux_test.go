package server_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/privtest"
)

// TestPrivilegedMeshAcrossNetworkNamespaces runs the mesh tests with every
// party in its own network namespace, so that every hop is real TCP across
// veth pairs and a router: client -> waypoint (HBONE), waypoint -> each
// pod's ztunnel (HBONE), ztunnel -> app inside the pod.
func TestPrivilegedMeshAcrossNetworkNamespaces(t *testing.T) {
	privtest.Require(t)
	for i, tt := range meshTests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, newNamespaces(t, fmt.Sprintf("awp%d-%d-", os.Getpid(), i)))
		})
	}
}

// namespaces is a network of namespaces named prefix+"...": a router
// ("node") and one namespace per party, joined to the router by a veth
// pair on a subnet of its own:
//
//	party i: eth0 10.231.i.2/24, default via 10.231.i.1
//	node:    h<i> 10.231.i.1/24, forwarding
//
// Namespaces hold no route out of 10.231.0.0/16: traffic can reach no
// address outside them. Everything is deleted at the test's cleanup.
type namespaces struct {
	prefix string

	mu   sync.Mutex
	next int
}

func newNamespaces(t testing.TB, prefix string) *namespaces {
	t.Helper()
	n := &namespaces{prefix: prefix}
	node := n.add(t, "node")
	ipRun(t, "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	return n
}

// add creates the namespace prefix+name with lo up and returns its name.
func (n *namespaces) add(t testing.TB, name string) string {
	t.Helper()
	ns := n.prefix + name
	ipRun(t, "netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns, err, out)
		}
	})
	ipRun(t, "-n", ns, "link", "set", "lo", "up")
	return ns
}

func (n *namespaces) host(t testing.TB, name string) *host {
	t.Helper()
	n.mu.Lock()
	n.next++
	i := n.next
	n.mu.Unlock()
	if i > 254 {
		t.Fatal("namespaces: out of subnets")
	}
	ns := n.add(t, name)
	node, veth := n.prefix+"node", fmt.Sprintf("h%d", i)
	subnet := fmt.Sprintf("10.231.%d.", i)
	ipRun(t, "-n", node, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
	ipRun(t, "-n", node, "addr", "add", subnet+"1/24", "dev", veth)
	ipRun(t, "-n", node, "link", "set", veth, "up")
	ipRun(t, "-n", ns, "addr", "add", subnet+"2/24", "dev", "eth0")
	ipRun(t, "-n", ns, "link", "set", "eth0", "up")
	ipRun(t, "-n", ns, "route", "add", "default", "via", subnet+"1")
	h, err := netns.Open("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() }) // before the namespace is deleted (cleanups run last first)
	return &host{
		name: name,
		ip:   netip.MustParseAddr(subnet + "2"),
		listen: func(ctx context.Context, addr string) (net.Listener, error) {
			return h.Listen(ctx, addr, netns.SocketOptions{})
		},
		dial: func(ctx context.Context, addr string) (net.Conn, error) {
			return h.Dial(ctx, addr, netns.SocketOptions{})
		},
	}
}

func ipRun(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}
