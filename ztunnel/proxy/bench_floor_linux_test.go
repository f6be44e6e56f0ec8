package proxy

import (
	"context"
	"io"
	"net"
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
				wg.Go(func() { spliceRelay(ctx, c, r.dialFrom, r.to) })
			}
		})
	}
}

// spliceRelay connects in to addr and copies both ways until both end,
// passing half-closes on.
func spliceRelay(ctx context.Context, in net.Conn, d *nsDialer, addr string) {
	defer in.Close()
	out, err := d.dial(addr, netns.SocketOptions{})
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
