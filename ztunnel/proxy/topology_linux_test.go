package proxy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ambit-mesh/ambit/internal/hbone/hbonetest"
	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/privtest"
)

// podRulesGolden is the in-pod ruleset exactly as the CNI installs it
// (cni/rules renders it and golden-tests it against this file).
const podRulesGolden = "../../cni/rules/testdata/pod-default.golden"

// topology is two "nodes", each with one pod, built from network namespaces:
//
//	pod a (10.77.1.2) -- node a (10.77.1.1, 192.168.77.1) == link == node b (192.168.77.2, 10.77.2.1) -- pod b (10.77.2.2)
//
// Pods get the CNI's in-pod redirection rules. Everything is removed at cleanup.
type topology struct {
	prefix string
}

func (tp *topology) ns(name string) string { return tp.prefix + name }

func run(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newTopology(t testing.TB) *topology {
	tp := &topology{prefix: fmt.Sprintf("azt%d-", os.Getpid())}
	for _, n := range []string{"na", "nb"} {
		tp.addNetns(t, n)
		run(t, "ip", "netns", "exec", tp.ns(n), "sysctl", "-qw", "net.ipv4.ip_forward=1")
	}
	tp.addPod(t, "na", "pa", "veth0", "10.77.1")
	tp.addPod(t, "nb", "pb", "veth0", "10.77.2")
	run(t, "ip", "-n", tp.ns("na"), "link", "add", "link0", "type", "veth", "peer", "name", "link0", "netns", tp.ns("nb"))
	run(t, "ip", "-n", tp.ns("na"), "addr", "add", "192.168.77.1/30", "dev", "link0")
	run(t, "ip", "-n", tp.ns("nb"), "addr", "add", "192.168.77.2/30", "dev", "link0")
	run(t, "ip", "-n", tp.ns("na"), "link", "set", "link0", "up")
	run(t, "ip", "-n", tp.ns("nb"), "link", "set", "link0", "up")
	run(t, "ip", "-n", tp.ns("na"), "route", "add", "10.77.2.0/24", "via", "192.168.77.2")
	run(t, "ip", "-n", tp.ns("nb"), "route", "add", "10.77.1.0/24", "via", "192.168.77.1")
	// Service VIPs route like everything else: via the node.
	return tp
}

// addNetns creates the namespace name (prefixed) with lo up, removed at
// cleanup.
func (tp *topology) addNetns(t testing.TB, name string) {
	run(t, "ip", "netns", "add", tp.ns(name))
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", tp.ns(name)).Run() })
	run(t, "ip", "-n", tp.ns(name), "link", "set", "lo", "up")
}

// addPod creates pod namespace pod on node, joined by a veth pair (veth on
// the node, eth0 in the pod) as subnet.2, with subnet.1 on the node as its
// default route, and the CNI's in-pod rules.
func (tp *topology) addPod(t testing.TB, node, pod, veth, subnet string) {
	tp.addNetns(t, pod)
	node, pod = tp.ns(node), tp.ns(pod)
	run(t, "ip", "-n", node, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pod)
	run(t, "ip", "-n", node, "addr", "add", subnet+".1/24", "dev", veth)
	run(t, "ip", "-n", node, "link", "set", veth, "up")
	run(t, "ip", "-n", pod, "addr", "add", subnet+".2/24", "dev", "eth0")
	run(t, "ip", "-n", pod, "link", "set", "eth0", "up")
	run(t, "ip", "-n", pod, "route", "add", "default", "via", subnet+".1")
	tp.installPodRules(t, pod)
}

// installPodRules loads the CNI's golden in-pod ruleset with nft and adds its
// policy routing.
func (tp *topology) installPodRules(t testing.TB, pod string) {
	golden, err := os.ReadFile(podRulesGolden)
	if err != nil {
		t.Fatalf("in-pod rules: %v", err)
	}
	table, _, ok := strings.Cut(string(golden), "ip rule:")
	if !ok {
		t.Fatalf("%s: no ip rule line", podRulesGolden)
	}
	cmd := exec.Command("ip", "netns", "exec", pod, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(table)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f %s in %s: %v\n%s", podRulesGolden, pod, err, out)
	}
	run(t, "ip", "-n", pod, "rule", "add", "fwmark", "0x111/0xfff", "lookup", "133", "priority", "32764")
	run(t, "ip", "-n", pod, "route", "add", "local", "default", "dev", "lo", "table", "133")
}

func (tp *topology) handle(t testing.TB, name string) *netns.Handle {
	h, err := netns.Open("/run/netns/" + tp.ns(name))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// sniffer records every frame on an interface (AF_PACKET), as tcpdump would.
type sniffer struct {
	f    *os.File
	mu   sync.Mutex
	data bytes.Buffer
	n    int
	done chan struct{}
}

func sniff(t *testing.T, h *netns.Handle, ifname string) *sniffer {
	var fd int
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL))
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	if err != nil {
		t.Fatalf("capture on %s: %v", ifname, err)
	}
	s := &sniffer{f: os.NewFile(uintptr(fd), "packet"), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 65536)
		for {
			n, err := s.f.Read(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.data.Write(buf[:n])
			s.n++
			s.mu.Unlock()
		}
	}()
	t.Cleanup(s.stop)
	return s
}

func (s *sniffer) stop() {
	s.f.Close()
	<-s.done
}

// seen returns the frames captured and whether b appeared in any.
func (s *sniffer) seen(b []byte) (int, int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n, s.data.Len(), bytes.Contains(s.data.Bytes(), b)
}

// waitSeen waits (a few seconds at most) until b has been captured: the
// capture goroutine may read a frame a moment after the echo returned.
func (s *sniffer) waitSeen(b []byte) bool {
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, _, seen := s.seen(b); seen || time.Now().After(deadline) {
			return seen
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// twoPods is what most privileged tests start from: the topology (skipping
// unless privileged), a context ended at cleanup, a test CA, and handles on
// pods a and b.
func twoPods(t *testing.T) (*topology, context.Context, *hbonetest.CA, *netns.Handle, *netns.Handle) {
	t.Helper()
	privtest.Require(t)
	tp := newTopology(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ca := hbonetest.NewCA(t, "cluster.local")
	hpa, hpb := tp.handle(t, "pa"), tp.handle(t, "pb")
	t.Cleanup(func() { hpa.Close(); hpb.Close() })
	return tp, ctx, ca, hpa, hpb
}
