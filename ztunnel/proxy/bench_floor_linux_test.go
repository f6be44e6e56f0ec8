package proxy

import (
	"context"
	"io"
	"net"
	"os/exec"
	"sync"
	"testing"

	"github.com/ambit-mesh/ambit/internal/netns"
)

// startRelayPair runs two plain TCP relays where the stunnel4 pair runs: one
// in node a (19100 -> node b's 19143, 19101 -> 19144) and one in node b
// (19143 -> 127.0.0.1:9000, 19144 -> 127.0.0.1:9001). They copy with
// io.Copy between TCP sockets, which is splice(2): no TLS, no framing, no
// copy through user space. No two-proxy design can move bytes across these
// three TCP hops more cheaply, so this path is the floor that the ztunnel and
// stunnel4 pairs are measured against (the cost of the hops themselves).
func startRelayPair(b *testing.B, ctx context.Context, tp *topology) {
	// The relays end with their own context, canceled by the cleanups that
	// wait for them (the caller's is canceled only after those run).
	ctx, cancel := context.WithCancel(ctx)
	b.Cleanup(cancel) // runs last; the relays' cleanups cancel first
	na, nb := tp.handle(b, "na"), tp.handle(b, "nb")
	b.Cleanup(func() { na.Close(); nb.Close() })
	dialA, dialB := newNsDialer(b, na), newNsDialer(b, nb)
	for _, r := range []struct {
		h        *netns.Handle
		listen   string
		to       string
		dialFrom *nsDialer
	}{
		{na, ":19100", "192.168.77.2:19143", dialA},
		{na, ":19101", "192.168.77.2:19144", dialA},
		{nb, "192.168.77.2:19143", "127.0.0.1:9000", dialB},
		{nb, "192.168.77.2:19144", "127.0.0.1:9001", dialB},
	} {
		ln, err := r.h.Listen(ctx, r.listen, netns.SocketOptions{})
		if err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		b.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				wg.Go(func() { spliceRelay(ctx, c, r.dialFrom, r.to, netns.SocketOptions{}) })
			}
		})
	}
}

// spliceRelay connects in to addr and copies both ways until both end,
// passing half-closes on.
func spliceRelay(ctx context.Context, in net.Conn, d *nsDialer, addr string, o netns.SocketOptions) {
	defer in.Close()
	out, err := d.dial(addr, o)
	if err != nil {
		return
	}
	defer out.Close()
	stop := context.AfterFunc(ctx, func() { in.Close(); out.Close() })
	defer stop()
	var wg sync.WaitGroup
	half := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src) // *net.TCPConn to *net.TCPConn: splice(2)
		_ = dst.(*net.TCPConn).CloseWrite()
	}
	wg.Go(func() { half(out, in) })
	half(in, out)
	wg.Wait()
}

// startInPodRelayPair measures the floor of the ambient topology itself: it
// adds a second pod to each node (pc on node a, 10.77.3.2; pd on node b,
// 10.77.4.2) with the CNI's in-pod rules, an echo server (8080) and a sink
// (8081) in pd, and, where ztunnel would be, two plain TCP relays inside the
// pods: in pc on 15001, where the rules redirect pc's outbound connections,
// and in pd on 15006, where they redirect inbound ones. Each relay dials the
// original destination (SO_ORIGINAL_DST) with ztunnel's mark, so the rules
// let it pass, and splices. The path crosses the same redirects, conntrack
// and veths as ztunnel's, with no TLS and no HTTP/2. It returns a dialer in
// pc for the client.
func startInPodRelayPair(b *testing.B, ctx context.Context, tp *topology) *nsDialer {
	ctx, cancel := context.WithCancel(ctx)
	b.Cleanup(cancel)
	for _, side := range []struct{ node, pod, subnet, other, via string }{
		{"na", "pc", "10.77.3", "10.77.4.0/24", "192.168.77.2"},
		{"nb", "pd", "10.77.4", "10.77.3.0/24", "192.168.77.1"},
	} {
		node, pod := tp.ns(side.node), tp.ns(side.pod)
		run(b, "ip", "netns", "add", pod)
		b.Cleanup(func() { _ = exec.Command("ip", "netns", "del", pod).Run() })
		run(b, "ip", "-n", pod, "link", "set", "lo", "up")
		run(b, "ip", "-n", node, "link", "add", "veth1", "type", "veth", "peer", "name", "eth0", "netns", pod)
		run(b, "ip", "-n", node, "addr", "add", side.subnet+".1/24", "dev", "veth1")
		run(b, "ip", "-n", node, "link", "set", "veth1", "up")
		run(b, "ip", "-n", pod, "addr", "add", side.subnet+".2/24", "dev", "eth0")
		run(b, "ip", "-n", pod, "link", "set", "eth0", "up")
		run(b, "ip", "-n", pod, "route", "add", "default", "via", side.subnet+".1")
		run(b, "ip", "-n", node, "route", "add", side.other, "via", side.via)
		tp.installPodRules(b, pod)
	}
	hpc, hpd := tp.handle(b, "pc"), tp.handle(b, "pd")
	b.Cleanup(func() { hpc.Close(); hpd.Close() })
	echoServer(b, ctx, hpd, "8080")
	sinkServer(b, ctx, hpd, "8081")
	inPC, inPD := newNsDialer(b, hpc), newNsDialer(b, hpd)
	marked := netns.SocketOptions{Mark: DefaultMark}
	for _, r := range []struct {
		h    *netns.Handle
		port string
		d    *nsDialer
	}{{hpc, ":15001", inPC}, {hpd, ":15006", inPD}} {
		ln, err := r.h.Listen(ctx, r.port, netns.SocketOptions{})
		if err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		b.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				dst, err := netns.OriginalDst(c.(*net.TCPConn))
				if err != nil {
					c.Close()
					continue
				}
				wg.Go(func() { spliceRelay(ctx, c, r.d, dst.String(), marked) })
			}
		})
	}
	return inPC
}
