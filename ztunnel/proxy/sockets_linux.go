package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/ambit-mesh/ambit/internal/netns"
)

// NetnsSockets opens sockets inside a pod's network namespace, marked so
// that the pod's redirection rules let them through, with SO_REUSEPORT on
// listeners so that a new ztunnel can take over.
type NetnsSockets struct {
	h    *netns.Handle
	mark uint32
}

// NewNetnsSockets takes ownership of h; mark is ztunnel's socket mark.
func NewNetnsSockets(h *netns.Handle, mark uint32) *NetnsSockets {
	return &NetnsSockets{h: h, mark: mark}
}

// Listen opens a TCP listener on port, all addresses; connections accepted
// on OutboundPort, from the pod's own applications, get no TCP keepalive.
func (s *NetnsSockets) Listen(ctx context.Context, port uint16) (net.Listener, error) {
	return s.h.Listen(ctx, ":"+strconv.Itoa(int(port)),
		netns.SocketOptions{Mark: s.mark, ReusePort: true, NoKeepAlive: port == OutboundPort})
}

// Dial connects to dst; from src (IP_TRANSPARENT) when src is valid.
func (s *NetnsSockets) Dial(ctx context.Context, dst netip.AddrPort, src netip.Addr) (net.Conn, error) {
	return s.dial(ctx, dst, src, false)
}

// DialApp is Dial to the pod's own application, without TCP keepalive.
func (s *NetnsSockets) DialApp(ctx context.Context, dst netip.AddrPort, src netip.Addr) (net.Conn, error) {
	return s.dial(ctx, dst, src, true)
}

func (s *NetnsSockets) dial(ctx context.Context, dst netip.AddrPort, src netip.Addr, local bool) (net.Conn, error) {
	o := netns.SocketOptions{Mark: s.mark, NoKeepAlive: local}
	if src.IsValid() {
		o.Transparent, o.Source = true, src
	}
	return s.h.Dial(ctx, dst.String(), o)
}

// OriginalDst returns the destination c was addressed to before redirection.
func (s *NetnsSockets) OriginalDst(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("original destination of a %T", c)
	}
	a, err := netns.OriginalDst(tc)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	return a, nil
}

// Close releases the namespace handle; open sockets stay valid.
func (s *NetnsSockets) Close() error {
	if err := s.h.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("close netns: %w", err)
	}
	return nil
}
