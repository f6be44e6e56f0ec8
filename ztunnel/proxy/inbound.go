package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/ambit-mesh/ambit/internal/hbone"
)

// ErrDenied wraps policy refusals.
var ErrDenied = errors.New("denied by policy")

// isOwnPort says whether port is one of ztunnel's in-pod ports, which an
// inbound connection must never be forwarded to (it would loop).
func isOwnPort(port uint16) bool {
	return port == OutboundPort || port == InboundPort || port == HBONEPort
}

// serveHBONE handles one CONNECT request on the pod's 15008.
func (pd *pod) serveHBONE(ctx context.Context, in *hbone.Incoming) error {
	t := &tracked{inbound: true, info: ConnInfo{ID: pd.p.nextID.Add(1), Direction: Inbound, Start: time.Now(),
		SrcIdentity: in.Peer, DstIdentity: pd.id, MTLS: true, Dst: in.Target, Src: in.Source, Via: "hbone"}}
	info := &t.info
	if !info.Src.IsValid() {
		info.Src = addrOf(in.RemoteAddr()).Addr()
	}
	// In-pod, a tunnel can only be for this pod: the address the client
	// connected to.
	if local := addrOf(in.LocalAddr()).Addr(); in.Target.Addr().Unmap() != local || isOwnPort(in.Target.Port()) {
		err := fmt.Errorf("%w: target %s is not this pod (%s)", hbone.ErrBadRequest, in.Target, local)
		pd.p.cfg.Observer.Refused(info, err)
		return err
	}
	w, err := pd.awaitReady(ctx)
	if err != nil {
		pd.p.cfg.Observer.Refused(info, err)
		return fmt.Errorf("%w: %w", hbone.ErrUnreachable, err)
	}
	info.DstWorkload = w
	info.SrcWorkload = pd.p.cfg.Tables.WorkloadByIP(info.Src)
	if d := pd.p.authorize(w, t.authzConn()); !d.Allowed {
		err := fmt.Errorf("%w: %s (%s)", ErrDenied, d.Reason, d.Policy)
		pd.log.Debug("connection denied", "conn", info.ID, "src", info.Src, "dst", info.Dst, "identity", in.Peer, "policy", d.Policy, "reason", d.Reason)
		pd.p.cfg.Observer.Refused(info, err)
		return fmt.Errorf("%w: %w", hbone.ErrDenied, err)
	}
	app, err := pd.dialApp(ctx, in.Target, in.Source)
	if err != nil {
		pd.p.cfg.Observer.Refused(info, err)
		return fmt.Errorf("%w: %w", hbone.ErrUnreachable, err)
	}
	st, err := in.Hijack() // the relay outlives this handler
	if err != nil {
		app.Close()
		return err
	}
	pd.relay(t, st, app)
	return nil
}

// servePlaintext handles one plaintext connection redirected to 15006.
func (pd *pod) servePlaintext(c net.Conn) {
	t := &tracked{inbound: true, info: ConnInfo{ID: pd.p.nextID.Add(1), Direction: Inbound, Start: time.Now(), DstIdentity: pd.id, Via: "plaintext"}}
	info := &t.info
	info.Src = addrOf(c.RemoteAddr()).Addr()
	dst, err := pd.Sockets.OriginalDst(c)
	if err != nil {
		pd.refuse(c, info, err)
		return
	}
	info.Dst = dst
	if isOwnPort(dst.Port()) {
		pd.refuse(c, info, fmt.Errorf("plaintext to ztunnel's own port %d", dst.Port()))
		return
	}
	w, err := pd.awaitReady(pd.serving)
	if err != nil {
		pd.refuse(c, info, err)
		return
	}
	info.DstWorkload = w
	info.SrcWorkload = pd.p.cfg.Tables.WorkloadByIP(info.Src)
	if d := pd.p.authorize(w, t.authzConn()); !d.Allowed {
		pd.refuse(c, info, fmt.Errorf("%w: %s (%s)", ErrDenied, d.Reason, d.Policy))
		return
	}
	app, err := pd.dialApp(pd.serving, dst, info.Src)
	if err != nil {
		pd.refuse(c, info, err)
		return
	}
	pd.relay(t, c, app)
}

// dialApp connects to the pod's application from inside its namespace,
// keeping the client's address as the source where possible.
func (pd *pod) dialApp(ctx context.Context, dst netip.AddrPort, src netip.Addr) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, defaultDialTO)
	defer cancel()
	if src == dst.Addr() {
		src = netip.Addr{} // the pod talking to itself: no transparent bind
	}
	c, err := pd.Sockets.DialApp(ctx, dst, src)
	if err != nil {
		return nil, fmt.Errorf("connect to the application at %s: %w", dst, err)
	}
	return c, nil
}
