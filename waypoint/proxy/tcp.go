package proxy

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/waypoint/authz"
	"github.com/ambit-mesh/ambit/waypoint/lb"
)

// serveTCP proxies a tunnel that carries no HTTP: L4 policy (L7 rules fail
// closed), then an endpoint of the destination, tunnel to it, relay.
func (p *Proxy) serveTCP(ctx context.Context, c net.Conn, info *connInfo, dest *destination) error {
	defer c.Close()
	start := time.Now()
	d := dest.policies.Evaluate(&authz.Request{
		Peer: info.peer, SourceIP: info.source,
		DestinationIP: info.target.Addr(), DestinationPort: info.target.Port(),
	})
	ex := &exchange{start: start, info: info, dest: dest}
	if !d.Allow {
		p.log.Info("tcp connection denied", "src", remoteOf(ex), "identity", info.peer, "dst", dest.name, "policy", d.Policy)
		return nil
	}
	st := p.state.Load()
	var (
		done = func(lb.Outcome) {}
		ep   = dest.workload
	)
	if ep == nil {
		b := st.backends[dest.fallback.Backends[0].Key()]
		if b == nil {
			return fmt.Errorf("tcp to %s: no backend", dest.name)
		}
		h, ok := b.pool.Pick()
		if !ok {
			return fmt.Errorf("tcp to %s: %w", dest.name, errNoHealthy)
		}
		done, ep = h.Done, h.Value()
		ex.backend = b
	}
	ex.endpoint = ep
	up, err := p.cfg.Dialer.Dial(ctx, hbone.Request{
		Source: p.cfg.Identity, Destination: ep.identity, Server: ep.hbone, Target: ep.addr,
		SourceIP: info.source, Traceparent: info.traceparent,
	})
	if err != nil {
		done(lb.ConnectFailure)
		return fmt.Errorf("tcp to %s via %s: %w", dest.name, ep.addr, err)
	}
	done(lb.Success)
	l := p.labels(ex)
	if p.cfg.Metrics != nil {
		p.cfg.Metrics.TCPOpened(&l)
	}
	received, sent, err := hbone.Relay(c, up)
	if p.cfg.Metrics != nil {
		p.cfg.Metrics.TCPClosed(&l, sent, received)
	}
	p.log.Info("tcp connection", "src", remoteOf(ex), "identity", info.peer, "dst", dest.name,
		"upstream", ep.addr, "bytes_received", received, "bytes_sent", sent, "duration", time.Since(start))
	if err != nil {
		return fmt.Errorf("tcp relay to %s: %w", dest.name, err)
	}
	return nil
}
