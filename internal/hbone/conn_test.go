package hbone

import (
	"context"
	"net"
	"testing"

	"golang.org/x/net/nettest"
)

// TestStreamIsANetConn runs x/net's net.Conn conformance tests on a tunnel:
// the client's Stream and the server's, over real TLS on loopback. Among
// them: deadlines set while a Read or a Write is blocked unblock it (a
// Stream makes a deadline's channel only when one is set), Close unblocks
// both, and concurrent use is safe.
func TestStreamIsANetConn(t *testing.T) {
	accepted := make(chan *Stream, 1)
	e := newTestEnv(t, HandlerFunc(func(_ context.Context, in *Incoming) error {
		st, err := in.Hijack()
		if err != nil {
			return err
		}
		accepted <- st
		return nil
	}))
	nettest.TestConn(t, func() (net.Conn, net.Conn, func(), error) {
		c := e.dial(t)
		s := <-accepted
		return c, s, func() { c.Close(); s.Close() }, nil
	})
}
