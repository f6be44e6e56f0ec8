package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/internal/hbone/hbonetest"
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
	for _, r := range []struct {
		h      *netns.Handle
		listen string
		to     string
	}{
		{na, ":19100", "192.168.77.2:19143"},
		{na, ":19101", "192.168.77.2:19144"},
		{nb, "192.168.77.2:19143", "127.0.0.1:9000"},
		{nb, "192.168.77.2:19144", "127.0.0.1:9001"},
	} {
		listenRelay(b, ctx, cancel, r.h, r.listen, func(c net.Conn) {
			spliceRelay(ctx, c, r.h, r.to, netns.SocketOptions{})
		})
	}
}

// listenRelay listens on addr inside h and runs relay for every connection
// in a goroutine of its own, until its cleanup, which cancels the relays'
// context and waits for them.
func listenRelay(b *testing.B, ctx context.Context, cancel context.CancelFunc, h *netns.Handle, addr string, relay func(net.Conn)) {
	ln, err := h.Listen(ctx, addr, netns.SocketOptions{})
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
			wg.Go(func() { relay(c) })
		}
	})
}

// spliceRelay connects in to addr from inside h, as ztunnel dials
// (netns.Handle.Dial, keepalive off as ztunnel's in-pod dials are), and
// copies both ways until both end, passing half-closes on.
func spliceRelay(ctx context.Context, in net.Conn, h *netns.Handle, addr string, o netns.SocketOptions) {
	defer in.Close()
	o.NoKeepAlive = true
	out, err := h.Dial(ctx, addr, o)
	if err != nil {
		return
	}
	defer out.Close()
	copyBoth(ctx, in, out, func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src) // *net.TCPConn to *net.TCPConn: splice(2)
	})
}

// copyBoth runs copy both ways between a and b until both directions end,
// half-closing each destination as its source ends (a TLS connection's
// CloseWrite sends close_notify), and closes both when ctx ends.
func copyBoth(ctx context.Context, a, b net.Conn, copy func(dst, src net.Conn)) {
	stop := context.AfterFunc(ctx, func() { a.Close(); b.Close() })
	defer stop()
	var wg sync.WaitGroup
	half := func(dst, src net.Conn) {
		copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}
	wg.Go(func() { half(b, a) })
	half(a, b)
	wg.Wait()
}

// addFloorPods adds a pod to each node, client on node a and server on node
// b (each with the CNI's in-pod rules, its subnet's .2, the veth named veth
// in its node), routes between them, and an echo server (8080) and a sink
// (8081) in the server pod; it returns handles on both.
func addFloorPods(b *testing.B, ctx context.Context, tp *topology, client, server, veth, clientNet, serverNet string) (*netns.Handle, *netns.Handle) {
	tp.addPod(b, "na", client, veth, clientNet)
	tp.addPod(b, "nb", server, veth, serverNet)
	run(b, "ip", "-n", tp.ns("na"), "route", "add", serverNet+".0/24", "via", "192.168.77.2")
	run(b, "ip", "-n", tp.ns("nb"), "route", "add", clientNet+".0/24", "via", "192.168.77.1")
	hc, hs := tp.handle(b, client), tp.handle(b, server)
	b.Cleanup(func() { hc.Close(); hs.Close() })
	echoServer(b, ctx, hs, "8080")
	sinkServer(b, ctx, hs, "8081")
	return hc, hs
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
	hpc, hpd := addFloorPods(b, ctx, tp, "pc", "pd", "veth1", "10.77.3", "10.77.4")
	marked := netns.SocketOptions{Mark: DefaultMark}
	for _, r := range []struct {
		h    *netns.Handle
		port string
	}{{hpc, ":15001"}, {hpd, ":15006"}} {
		listenRelay(b, ctx, cancel, r.h, r.port, func(c net.Conn) {
			dst, err := netns.OriginalDst(c.(*net.TCPConn))
			if err != nil {
				c.Close()
				return
			}
			spliceRelay(ctx, c, r.h, dst.String(), marked)
		})
	}
	return newNsDialer(b, hpc)
}

// startInPodTLSRelayPair measures the floor of any proxy pair that
// encrypts in user space, as ztunnel does, on the ambient path: a third pod
// on each node (pe on node a, 10.77.5.2; pf on node b, 10.77.6.2) with the
// CNI's in-pod rules, an echo server (8080) and a sink (8081) in pf, a relay
// in pe on 15001 (where the rules redirect pe's outbound connections) that
// dials pf's 15008 (which the rules let in) with crypto/tls, TLS 1.3 and
// the suite HBONE gets (AES-128-GCM), and one in pf on 15008 that dials the
// application. A two-byte header carries the destination port: no HTTP/2,
// no multiplexing, one TLS connection per connection (so it is measured for
// throughput and persistent latency only: a handshake per connection is
// stunnel4's cost, not this floor's). Bytes are copied through 256 KiB
// buffers, TLS records are full size. It returns a dialer in pe for the
// client.
func startInPodTLSRelayPair(b *testing.B, ctx context.Context, tp *topology, ca *hbonetest.CA) *nsDialer {
	ctx, cancel := context.WithCancel(ctx)
	b.Cleanup(cancel)
	hpe, hpf := addFloorPods(b, ctx, tp, "pe", "pf", "veth2", "10.77.5", "10.77.6")
	svid := ca.SVID(b, "spiffe://cluster.local/ns/floor/sa/tls")
	cert := tls.Certificate{Certificate: [][]byte{svid.Certificates[0].Raw}, PrivateKey: svid.PrivateKey}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	serverConf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	// The certificate names a SPIFFE id, not a host: check its chain, as
	// HBONE does, with the name check left out.
	clientConf := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			c, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			_, err = c.Verify(x509.VerifyOptions{Roots: roots})
			return err
		}}
	marked := netns.SocketOptions{Mark: DefaultMark, NoKeepAlive: true}
	listenRelay(b, ctx, cancel, hpe, ":15001", func(c net.Conn) {
		defer c.Close()
		dst, err := netns.OriginalDst(c.(*net.TCPConn))
		if err != nil {
			return
		}
		raw, err := hpe.Dial(ctx, netip.AddrPortFrom(dst.Addr(), HBONEPort).String(), marked)
		if err != nil {
			return
		}
		tc := tls.Client(raw, clientConf)
		defer tc.Close()
		if _, err := tc.Write(binary.BigEndian.AppendUint16(nil, dst.Port())); err != nil {
			return
		}
		bufferedRelay(ctx, c, tc)
	})
	listenRelay(b, ctx, cancel, hpf, fmt.Sprintf(":%d", HBONEPort), func(c net.Conn) {
		tc := tls.Server(c, serverConf)
		defer tc.Close()
		var port [2]byte
		_ = tc.SetReadDeadline(time.Now().Add(benchTimeout))
		if _, err := io.ReadFull(tc, port[:]); err != nil {
			return
		}
		_ = tc.SetReadDeadline(time.Time{})
		app, err := hpf.Dial(ctx, fmt.Sprintf("10.77.6.2:%d", binary.BigEndian.Uint16(port[:])), marked)
		if err != nil {
			return
		}
		defer app.Close()
		bufferedRelay(ctx, tc, app)
	})
	return newNsDialer(b, hpe)
}

// bufferedRelay is copyBoth through 256 KiB buffers.
func bufferedRelay(ctx context.Context, a, b net.Conn) {
	copyBoth(ctx, a, b, func(dst, src net.Conn) {
		_, _ = io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, make([]byte, 256<<10))
	})
}
