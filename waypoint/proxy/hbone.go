package proxy

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/waypoint/model"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// connInfo is what the tunnel told about a client connection.
type connInfo struct {
	peer        spiffeid.ID    // the verified HBONE peer (the client's ztunnel acts for it)
	source      netip.Addr     // original client, from Forwarded
	target      netip.AddrPort // :authority
	traceparent string
}

type connInfoKey struct{}

func connContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*trackedConn); ok {
		return context.WithValue(ctx, connInfoKey{}, tc.info)
	}
	return ctx
}

func connInfoFrom(ctx context.Context) *connInfo {
	ci, _ := ctx.Value(connInfoKey{}).(*connInfo)
	if ci == nil {
		return &connInfo{}
	}
	return ci
}

// ServeHBONE serves one tunnel: refused (503) if its target is not a
// destination of this waypoint, else accepted and served as HTTP/1.1, h2c
// or TCP until it ends.
func (p *Proxy) ServeHBONE(ctx context.Context, in *hbone.Incoming) error {
	dest := p.state.Load().lookup(in.Target)
	if dest == nil {
		return fmt.Errorf("%w: %s is not served by this waypoint", hbone.ErrUnreachable, in.Target)
	}
	st, err := in.Accept()
	if err != nil {
		return fmt.Errorf("accept tunnel to %s: %w", in.Target, err)
	}
	info := &connInfo{peer: in.Peer, source: in.Source, target: in.Target, traceparent: in.Traceparent}
	br := bufio.NewReaderSize(st, 4096)
	proto := protoTCP
	switch dest.port.Protocol {
	case model.TCP:
	default:
		if proto, err = detect(st, br, p.cfg.DetectTimeout); err != nil {
			return fmt.Errorf("detect protocol to %s: %w", in.Target, err)
		}
	}
	conn := &peekedConn{Conn: st, br: br}
	if proto != protoTCP {
		return p.serveHTTP(ctx, conn, info)
	}
	return p.serveTCP(ctx, conn, info, dest)
}

// serveHTTP hands the connection to the HTTP server (HTTP/1.1 or h2c) and
// waits until the server closes it.
func (p *Proxy) serveHTTP(ctx context.Context, c net.Conn, info *connInfo) error {
	tc := &trackedConn{Conn: c, info: info, done: make(chan struct{})}
	select {
	case p.conns.ch <- tc:
	case <-p.closed:
		return c.Close()
	case <-ctx.Done():
		return c.Close()
	}
	select {
	case <-tc.done:
	case <-ctx.Done():
		tc.Close()
		<-tc.done
	}
	return nil
}

// trackedConn tells when the HTTP server is done with a connection.
type trackedConn struct {
	net.Conn
	info *connInfo
	once sync.Once
	done chan struct{}
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.done) })
	return err
}

// connListener feeds tunnel connections to an http.Server.
type connListener struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnListener() *connListener {
	return &connListener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return hboneAddr{} }

type hboneAddr struct{}

func (hboneAddr) Network() string { return "hbone" }
func (hboneAddr) String() string  { return "hbone" }
