package proxy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/ztunnel/state"
)

// ErrNoEndpoint means a Service has no healthy endpoint for the port.
var ErrNoEndpoint = errors.New("no healthy endpoint")

// route is where an outbound connection goes.
type route struct {
	// target is the destination address (the endpoint, or the original
	// destination when a waypoint takes it).
	target netip.AddrPort
	// hbone, when set, carries the connection over HBONE to server, which
	// must prove identity.
	hbone    bool
	server   netip.AddrPort
	identity spiffeid.ID
	dst      *state.Workload
	via      string
}

// serveOutbound proxies one connection a local pod opened.
func (pd *pod) serveOutbound(c net.Conn) {
	t := &tracked{info: ConnInfo{ID: pd.p.nextID.Add(1), Direction: Outbound, Start: time.Now(), SrcIdentity: pd.id}}
	info := &t.info
	info.Src = addrOf(c.RemoteAddr()).Addr()
	dst, err := pd.Sockets.OriginalDst(c)
	if err != nil {
		pd.refuse(c, info, err)
		return
	}
	info.Dst = dst
	w, err := pd.awaitReady(pd.serving)
	if err != nil {
		pd.refuse(c, info, err)
		return
	}
	info.SrcWorkload = w
	rt, err := pd.p.resolve(dst)
	if err != nil {
		pd.refuse(c, info, err)
		return
	}
	info.Via, info.DstWorkload, info.DstIdentity, info.MTLS = rt.via, rt.dst, rt.identity, rt.hbone
	ctx, cancel := context.WithTimeout(pd.serving, defaultDialTO)
	var up net.Conn
	if rt.hbone {
		var st *hbone.Stream
		st, err = pd.client.Dial(ctx, hbone.Request{
			Source: pd.id, Destination: rt.identity, SourceIP: info.Src,
			Server: rt.server, Target: rt.target,
		})
		if st != nil {
			up = st
		}
	} else {
		up, err = pd.Sockets.Dial(ctx, rt.target, netip.Addr{})
	}
	cancel()
	if err != nil {
		pd.refuse(c, info, fmt.Errorf("connect %s via %s: %w", rt.target, rt.via, err))
		return
	}
	pd.relay(t, c, up)
}

// refuse closes a connection that cannot be served, and reports why. It
// closes with FIN, not a reset: in the privileged tests a reset made the
// client's next connection through the redirect fail with ECONNRESET about
// one run in three (the kernel reused the port while conntrack still held
// the reset connection).
func (pd *pod) refuse(c net.Conn, info *ConnInfo, err error) {
	c.Close()
	pd.log.Debug("connection refused", "conn", info.ID, "direction", string(info.Direction), "src", info.Src, "dst", info.Dst,
		"identity", info.SrcIdentity, "err", err)
	pd.p.cfg.Observer.Refused(info, err)
}

// resolve finds where a connection to dst goes: a Service VIP to one of its
// healthy endpoints (or its waypoint, or the endpoint's waypoint), a captured
// workload over HBONE (or its waypoint), anything else in plaintext as it is.
func (p *Proxy) resolve(dst netip.AddrPort) (route, error) {
	t := p.cfg.Tables
	if svc := t.ServiceByVIP(dst.Addr()); svc != nil {
		if svc.Waypoint != nil {
			return p.viaWaypoint(svc.Waypoint, dst)
		}
		ep, port, err := pickEndpoint(t.Endpoints(svc), svc, dst.Port())
		if err != nil {
			return route{}, fmt.Errorf("service %s port %d: %w", svc.Key(), dst.Port(), err)
		}
		target := netip.AddrPortFrom(ep.Addresses[0], port)
		if ep.Waypoint != nil {
			// The endpoint accepts mesh traffic only from its waypoint.
			return p.viaWaypoint(ep.Waypoint, target)
		}
		return workloadRoute(ep, target), nil
	}
	if w := t.WorkloadByIP(dst.Addr()); w != nil {
		if w.Waypoint != nil {
			return p.viaWaypoint(w.Waypoint, dst)
		}
		return workloadRoute(w, dst), nil
	}
	return route{target: dst, via: "passthrough"}, nil
}

func workloadRoute(w *state.Workload, target netip.AddrPort) route {
	if !w.HBONE {
		return route{target: target, dst: w, via: "passthrough"}
	}
	return route{target: target, hbone: true, server: netip.AddrPortFrom(target.Addr(), HBONEPort),
		identity: w.Identity, dst: w, via: "hbone"}
}

// pickEndpoint chooses a healthy endpoint serving port of svc at random,
// and its target port.
func pickEndpoint(eps []*state.Workload, svc *state.Service, port uint16) (*state.Workload, uint16, error) {
	type cand struct {
		w    *state.Workload
		port uint16
	}
	var cands []cand
	for _, w := range eps {
		if !w.Healthy || len(w.Addresses) == 0 {
			continue
		}
		for _, p := range w.Services[svc.Key()] {
			if p.ServicePort == port {
				cands = append(cands, cand{w, p.TargetPort})
				break
			}
		}
	}
	if len(cands) == 0 {
		return nil, 0, ErrNoEndpoint
	}
	c := cands[rand.IntN(len(cands))]
	return c.w, c.port, nil
}

// viaWaypoint sends a connection to dst through the waypoint.
func (p *Proxy) viaWaypoint(wp *state.Waypoint, dst netip.AddrPort) (route, error) {
	w, addr, err := p.waypointWorkload(wp)
	if err != nil {
		return route{}, err
	}
	return route{target: dst, hbone: true, server: netip.AddrPortFrom(addr, wp.Port), identity: w.Identity, dst: w, via: "waypoint"}, nil
}

// waypointWorkload finds a healthy HBONE workload of the waypoint.
func (p *Proxy) waypointWorkload(wp *state.Waypoint) (*state.Workload, netip.Addr, error) {
	t := p.cfg.Tables
	if wp.Address.IsValid() {
		if w := t.WorkloadByIP(wp.Address); w != nil && w.HBONE {
			return w, wp.Address, nil
		}
		return nil, netip.Addr{}, fmt.Errorf("waypoint %s: %w", wp.Address, ErrNoEndpoint)
	}
	svc := t.ServiceByKey(wp.Service)
	if svc == nil {
		return nil, netip.Addr{}, fmt.Errorf("waypoint service %s unknown: %w", wp.Service, ErrNoEndpoint)
	}
	var cands []*state.Workload
	for _, w := range t.Endpoints(svc) {
		if w.Healthy && w.HBONE && len(w.Addresses) > 0 {
			cands = append(cands, w)
		}
	}
	if len(cands) == 0 {
		return nil, netip.Addr{}, fmt.Errorf("waypoint service %s: %w", wp.Service, ErrNoEndpoint)
	}
	w := cands[rand.IntN(len(cands))]
	return w, w.Addresses[0], nil
}

// waypointIdentity is the identity of the waypoint's workloads.
func (p *Proxy) waypointIdentity(wp *state.Waypoint) (spiffeid.ID, bool) {
	w, _, err := p.waypointWorkload(wp)
	if err != nil {
		return spiffeid.ID{}, false
	}
	return w.Identity, true
}

func addrOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
