package rules

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	ambitns "github.com/ambit-mesh/ambit/cni/netns"
	"github.com/ambit-mesh/ambit/cni/netns/netnstest"
	"github.com/ambit-mesh/ambit/internal/privtest"
)

// accepted is a connection one of the test listeners took.
type accepted struct {
	listener string
	conn     net.Conn
}

// TestPrivilegedTrafficIsRedirected wires a "pod" and a "node" namespace with a veth
// pair, applies both rule sets, and checks where real connections land.
func TestPrivilegedTrafficIsRedirected(t *testing.T) {
	privtest.Require(t)
	pod, node := netnstest.New(t), netnstest.New(t)
	netnstest.Link(t, pod, "10.99.0.2/24", node, "10.99.0.1/24")
	pod.Run(t, "ip", "route", "add", "default", "via", "10.99.0.1")

	cfg := Default()
	if err := Apply(pod.Fd(), PodRuleset(cfg)); err != nil {
		t.Fatal(err)
	}
	noPods, _ := HostRuleset(cfg, nil)
	if err := Apply(node.Fd(), noPods); err != nil {
		t.Fatal(err)
	}

	got := make(chan accepted, 8)
	serve(t, got, pod, "outbound", "0.0.0.0:15001")
	serve(t, got, pod, "inbound", "0.0.0.0:15006")
	serve(t, got, pod, "hbone", "0.0.0.0:15008")
	serve(t, got, pod, "app", "0.0.0.0:8080")
	serve(t, got, node, "node", "10.99.0.1:80")

	expect := func(t *testing.T, from *netnstest.NS, dst string, mark int, want string) net.Conn {
		t.Helper()
		c, err := dial(from, dst, mark)
		if err != nil {
			t.Fatalf("dial %s: %v", dst, err)
		}
		t.Cleanup(func() { c.Close() })
		select {
		case a := <-got:
			t.Cleanup(func() { a.conn.Close() })
			if a.listener != want {
				t.Fatalf("connection to %s landed on %s, want %s", dst, a.listener, want)
			}
			return a.conn
		case <-time.After(3 * time.Second):
			t.Fatalf("connection to %s: nothing accepted", dst)
		}
		return nil
	}

	t.Run("outbound to an outside address goes to 15001", func(t *testing.T) {
		c := expect(t, pod, "192.0.2.1:80", 0, "outbound")
		if dst := originalDst(t, c); dst != "192.0.2.1:80" {
			t.Errorf("SO_ORIGINAL_DST = %s, want 192.0.2.1:80", dst)
		}
	})
	t.Run("ztunnel-marked outbound is not captured", func(t *testing.T) {
		expect(t, pod, "10.99.0.1:80", int(ZtunnelMark), "node")
	})
	t.Run("loopback is not captured", func(t *testing.T) {
		expect(t, pod, "127.0.0.1:8080", 0, "app")
	})
	t.Run("inbound goes to 15006", func(t *testing.T) {
		c := expect(t, node, "10.99.0.2:8080", 0, "inbound")
		if dst := originalDst(t, c); dst != "10.99.0.2:8080" {
			t.Errorf("SO_ORIGINAL_DST = %s, want 10.99.0.2:8080", dst)
		}
	})
	t.Run("inbound HBONE is not captured", func(t *testing.T) {
		expect(t, node, "10.99.0.2:15008", 0, "hbone")
	})
	t.Run("node probes reach the app from the SNAT address", func(t *testing.T) {
		withPod, _ := HostRuleset(cfg, []netip.Addr{netip.MustParseAddr("10.99.0.2")})
		if err := Apply(node.Fd(), withPod); err != nil {
			t.Fatal(err)
		}
		c := expect(t, node, "10.99.0.2:8080", 0, "app")
		if src := c.RemoteAddr().(*net.TCPAddr).IP.String(); src != cfg.ProbeSNAT.String() {
			t.Errorf("probe source = %s, want %s", src, cfg.ProbeSNAT)
		}
		// The reply path works: data flows both ways.
		if _, err := c.Write([]byte("ok")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("after removal nothing is captured", func(t *testing.T) {
		if err := Remove(pod.Fd(), nftables.TableFamilyINet, PodRuleset(cfg).Route); err != nil {
			t.Fatal(err)
		}
		expect(t, node, "10.99.0.2:8080", 0, "app")
	})
}

// serve accepts on addr inside ns and reports each connection on got.
func serve(t *testing.T, got chan<- accepted, ns *netnstest.NS, name, addr string) {
	t.Helper()
	var ln net.Listener
	if err := ambitns.Do(ns.File, func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns.Name, err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			got <- accepted{name, c}
		}
	}()
}

// dial connects from inside ns, with socket mark if non-zero.
func dial(ns *netnstest.NS, addr string, mark int) (net.Conn, error) {
	var c net.Conn
	err := ambitns.Do(ns.File, func() (err error) {
		d := net.Dialer{Timeout: 2 * time.Second}
		if mark != 0 {
			d.Control = func(_, _ string, rc syscall.RawConn) error {
				var serr error
				if err := rc.Control(func(fd uintptr) {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mark)
				}); err != nil {
					return err
				}
				return serr
			}
		}
		c, err = d.Dial("tcp4", addr)
		return err
	})
	return c, err
}

// originalDst reads SO_ORIGINAL_DST of a redirected connection.
func originalDst(t *testing.T, c net.Conn) string {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var addr *unix.IPv6Mreq
	var serr error
	if err := rc.Control(func(fd uintptr) {
		addr, serr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatalf("SO_ORIGINAL_DST: %v", serr)
	}
	// struct sockaddr_in: family, port (big endian), address.
	raw := addr.Multiaddr
	port := binary.BigEndian.Uint16(raw[2:4])
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(raw[4:8])), port).String()
}
