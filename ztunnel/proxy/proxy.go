// Package proxy is ztunnel's data path: per enrolled pod, inside the pod's
// network namespace, it serves the outbound listener (15001, original
// destination), the plaintext inbound listener (15006) and the HBONE inbound
// listener (15008); it routes outbound connections (Service VIP to an
// endpoint, meshed destinations over HBONE, others passed through), enforces
// L4 authorization on inbound ones with the verified peer identity, and
// closes open connections that a policy change denies.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/internal/shrink"
	"github.com/ambit-mesh/ambit/ztunnel/authz"
	"github.com/ambit-mesh/ambit/ztunnel/state"
)

// In-pod ports (Istio's).
const (
	OutboundPort  uint16 = 15001
	InboundPort   uint16 = 15006
	HBONEPort     uint16 = 15008
	DefaultMark   uint32 = 0x539
	DefaultReady         = 5 * time.Second
	DefaultDrain         = 5 * time.Second
	defaultDialTO        = 10 * time.Second
)

// Certs supplies SVIDs by identity and the trust bundle.
type Certs interface {
	hbone.SVIDSource
	x509bundle.Source
	// Current returns id's certificate if one is in hand and valid, else
	// nil, without fetching or waiting.
	Current(id spiffeid.ID) *x509svid.SVID
}

// Sockets opens sockets where a pod's traffic is: inside its network
// namespace, marked so they are not captured again.
type Sockets interface {
	// Listen opens a TCP listener on port, all addresses, with
	// SO_REUSEPORT. Connections accepted on OutboundPort (the pod's own
	// applications', redirected inside the pod) get no TCP keepalive.
	Listen(ctx context.Context, port uint16) (net.Listener, error)
	// Dial connects to dst; from src (transparently) when src is valid.
	Dial(ctx context.Context, dst netip.AddrPort, src netip.Addr) (net.Conn, error)
	// DialApp is Dial to the pod's own application, without TCP keepalive:
	// both ends are inside the pod.
	DialApp(ctx context.Context, dst netip.AddrPort, src netip.Addr) (net.Conn, error)
	// OriginalDst is where a redirected connection was going.
	OriginalDst(c net.Conn) (netip.AddrPort, error)
	// Close releases the namespace.
	Close() error
}

// Pod is an enrolled pod.
type Pod struct {
	UID, Name, Namespace, ServiceAccount string
	Sockets                              Sockets
}

// Config configures a Proxy. Tables and Certs are required.
type Config struct {
	Tables      *state.Tables
	Certs       Certs
	TrustDomain spiffeid.TrustDomain
	// ReadyTimeout bounds how long a connection waits for its pod's
	// certificate and configuration before it is refused. Default 5 s.
	ReadyTimeout time.Duration
	// DrainTimeout is how long established connections may go on once the
	// proxy stops or a pod is removed. Default 5 s.
	DrainTimeout time.Duration
	// HBONE tunes the outbound HBONE clients (SVIDs, Bundles and DialTCP
	// are set per pod).
	HBONE    hbone.ClientConfig
	Observer Observer
	Log      *slog.Logger
}

// Proxy serves the enrolled pods of a node.
type Proxy struct {
	cfg    Config
	log    *slog.Logger
	nextID atomic.Uint64

	mu      sync.Mutex
	ctx     context.Context // set by Run; nil when not running
	pods    map[string]*pod
	conns   map[*tracked]struct{}
	stopped bool
	// connsPeak is conns' largest size since it was last rebuilt
	// (shrink.Map: a burst's room goes back once it is over).
	connsPeak int

	stopping sync.WaitGroup // pods being removed
	running  chan struct{}  // closed when Run starts
}

// tracked is an open connection: inbound ones are re-checked when policy
// changes.
type tracked struct {
	info    ConnInfo // in the same allocation: thousands may be open
	pod     *pod
	inbound bool
	closed  atomic.Bool
	br      *hbone.Bridge
	// reported is what Observer.Progress has been told of each way.
	reported [2]atomic.Int64
}

// unreported returns the part of t's counts (sent, received) not
// reported yet, and takes it as reported. Of two calls racing with
// different counts, the one with the older counts gets nothing: each byte
// once.
func (t *tracked) unreported(sent, received int64) Bytes {
	return Bytes{Sent: max(sent-t.reported[0].Swap(sent), 0), Received: max(received-t.reported[1].Swap(received), 0)}
}

// ReportProgress reports to the Observer the bytes each open connection
// has copied since it was last reported, so that byte counters move while
// long-lived connections are open (a database's, a gRPC stream's). The
// metrics endpoint calls it before each scrape.
func (p *Proxy) ReportProgress() {
	p.mu.Lock()
	ts := slices.Collect(maps.Keys(p.conns))
	p.mu.Unlock()
	for _, t := range ts {
		if b := t.unreported(t.br.Counts()); b != (Bytes{}) {
			p.cfg.Observer.Progress(&t.info, b)
		}
	}
}

// authzConn is what L4 policy decides an inbound connection on: its
// verified peer (zero for plaintext), source and destination.
func (t *tracked) authzConn() authz.Conn {
	return authz.Conn{Peer: t.info.SrcIdentity, Src: t.info.Src, Dst: t.info.Dst.Addr(), DstPort: t.info.Dst.Port()}
}

// New checks cfg and returns a Proxy. It starts nothing.
func New(cfg Config) (*Proxy, error) {
	if cfg.Tables == nil || cfg.Certs == nil || cfg.TrustDomain.IsZero() {
		return nil, errors.New("proxy: Config needs Tables, Certs and TrustDomain")
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReady
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = DefaultDrain
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Proxy{cfg: cfg, log: log, pods: map[string]*pod{}, conns: map[*tracked]struct{}{}, running: make(chan struct{})}, nil
}

// Run serves until ctx ends: it re-checks open inbound connections at every
// configuration change. When ctx ends it stops every pod's listeners, lets
// established connections drain for DrainTimeout, then closes them.
func (p *Proxy) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.ctx != nil || p.stopped {
		p.mu.Unlock()
		return errors.New("proxy: Run called twice")
	}
	p.ctx = ctx
	p.mu.Unlock()
	close(p.running)
	for {
		changed := p.cfg.Tables.Changed()
		p.recheck()
		select {
		case <-changed:
		case <-ctx.Done():
			p.shutdown()
			return nil
		}
	}
}

func (p *Proxy) shutdown() {
	p.mu.Lock()
	p.stopped = true
	pods := make([]*pod, 0, len(p.pods))
	for _, pd := range p.pods {
		pods = append(pods, pd)
	}
	p.pods = map[string]*pod{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, pd := range pods {
		wg.Go(pd.stop)
	}
	wg.Wait()
	p.stopping.Wait()
}

// Running is closed once Run has started: from then on AddPod works.
func (p *Proxy) Running() <-chan struct{} { return p.running }

// AddPod starts serving pod (replacing a pod of the same uid) and returns
// once its listeners are open, so that redirected traffic has somewhere to
// go. Connections wait (ReadyTimeout at most) for the pod's certificate and
// configuration.
func (p *Proxy) AddPod(pd Pod) error {
	id, err := spiffeid.FromSegments(p.cfg.TrustDomain, "ns", pd.Namespace, "sa", pd.ServiceAccount)
	if err != nil {
		return fmt.Errorf("pod %s/%s: identity: %w", pd.Namespace, pd.Name, err)
	}
	p.mu.Lock()
	ctx := p.ctx
	old := p.pods[pd.UID]
	p.mu.Unlock()
	if ctx == nil {
		return errors.New("proxy: not running")
	}
	if old != nil {
		old.stop()
	}
	np, err := p.startPod(ctx, pd, id)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		go np.stop()
		return errors.New("proxy: stopped")
	}
	p.pods[pd.UID] = np
	return nil
}

// RemovePod stops accepting for the pod uid at once and closes its
// connections after the drain period, in the background (Run waits for it).
// Unknown uids are fine.
func (p *Proxy) RemovePod(uid string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pd := p.pods[uid]
	delete(p.pods, uid)
	if pd != nil {
		pd.cancel()
		// The listeners close here, not when the cancellation reaches the
		// accept loops, and only then do the open HBONE connections go
		// away: a tunnel refused on a pooled connection (REFUSED_STREAM, the
		// client retries on a new connection) must not find this instance's
		// 15008 still listening beside the successor's.
		pd.closeListeners()
		pd.server.GoAway()
		p.stopping.Go(pd.stop)
	}
}

// Pods returns the uids served.
func (p *Proxy) Pods() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.pods))
	for uid := range p.pods {
		out = append(out, uid)
	}
	slices.Sort(out)
	return out
}

// PodInfo describes a served pod for the admin dump.
type PodInfo struct {
	UID, Name, Namespace, Identity string
	Connections                    int
}

// PodInfos describes the served pods.
func (p *Proxy) PodInfos() []PodInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	count := map[*pod]int{}
	for t := range p.conns {
		count[t.pod]++
	}
	var out []PodInfo
	for _, pd := range p.pods {
		out = append(out, PodInfo{UID: pd.UID, Name: pd.Name, Namespace: pd.Namespace, Identity: pd.id.String(), Connections: count[pd]})
	}
	slices.SortFunc(out, func(a, b PodInfo) int {
		if a.UID < b.UID {
			return -1
		}
		if a.UID > b.UID {
			return 1
		}
		return 0
	})
	return out
}

// Connections counts open proxied connections.
func (p *Proxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

func (p *Proxy) track(t *tracked) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns[t] = struct{}{}
	p.conns = shrink.Map(p.conns, &p.connsPeak)
}

func (p *Proxy) untrack(t *tracked) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, t)
	p.conns = shrink.Map(p.conns, &p.connsPeak)
}

// recheck closes inbound connections the current policies deny.
func (p *Proxy) recheck() {
	p.mu.Lock()
	var inbound []*tracked
	for t := range p.conns {
		if t.inbound {
			inbound = append(inbound, t)
		}
	}
	p.mu.Unlock()
	for _, t := range inbound {
		w := p.cfg.Tables.Pod(t.pod.Namespace, t.pod.Name)
		var d authz.Decision
		if w == nil {
			d = authz.Decision{Reason: "workload no longer in the configuration"}
		} else {
			d = p.authorize(w, t.authzConn())
		}
		if !d.Allowed && t.closed.CompareAndSwap(false, true) {
			p.log.Info("closing connection denied by a policy change", "conn", t.info.ID, "pod", t.pod.Name, "namespace", t.pod.Namespace,
				"src", t.info.Src, "dst", t.info.Dst, "identity", t.info.SrcIdentity, "policy", d.Policy, "reason", d.Reason)
			t.br.Close()
		}
	}
}

// authorize decides an inbound connection to w: its waypoints (its own and
// those of the services it serves), if any, are the only mesh clients it
// accepts (no bypass), then L4 policy.
func (p *Proxy) authorize(w *state.Workload, c authz.Conn) authz.Decision {
	if wps := p.cfg.Tables.Waypoints(w); len(wps) > 0 && !c.Peer.IsZero() {
		if !slices.ContainsFunc(wps, func(wp *state.Waypoint) bool {
			wid, ok := p.waypointIdentity(wp)
			return ok && wid == c.Peer
		}) {
			return authz.Decision{Reason: "destination is bound to a waypoint; only the waypoint may connect"}
		}
	}
	return authz.Evaluate(p.cfg.Tables.PoliciesFor(w), c)
}
