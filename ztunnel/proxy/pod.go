package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/ztunnel/state"
)

// ErrNotReady means a pod's certificate or configuration was not there in
// time: its connections are refused, never sent in plaintext.
var ErrNotReady = errors.New("pod not ready")

// pod is one served pod: its listeners, its outbound HBONE client and the
// goroutines serving it.
type pod struct {
	Pod
	p      *Proxy
	id     spiffeid.ID
	log    *slog.Logger
	ctx    context.Context // ends when the pod stops accepting
	cancel context.CancelFunc
	// serving is ctx without its end: a connection the pod accepted is
	// served in it. Stopping closes the listeners; a connection accepted
	// before that (or taken from the backlog as they close) is established
	// for its client and is served and drained like the others, not
	// refused with its request unread (a reset).
	serving context.Context
	client  *hbone.Client
	server  *hbone.Server
	lns     []net.Listener
	wg      sync.WaitGroup // accept loops and the certificate prefetch
	conns   sync.WaitGroup // connection handlers and relays
	once    sync.Once
}

func (p *Proxy) startPod(parent context.Context, pd Pod, id spiffeid.ID) (*pod, error) {
	ctx, cancel := context.WithCancel(parent)
	np := &pod{Pod: pd, p: p, id: id, ctx: ctx, cancel: cancel, serving: context.WithoutCancel(ctx),
		log: p.log.With("pod", pd.Name, "namespace", pd.Namespace)}
	hc := p.cfg.HBONE
	hc.SVIDs, hc.Bundles = p.cfg.Certs, p.cfg.Certs
	hc.DialTCP = func(ctx context.Context, _ netip.Addr, dst netip.AddrPort) (net.Conn, error) {
		return pd.Sockets.Dial(ctx, dst, netip.Addr{})
	}
	if hc.Logger == nil {
		hc.Logger = np.log
	}
	var err error
	if np.client, err = hbone.NewClient(hc); err != nil {
		cancel()
		return nil, fmt.Errorf("pod %s/%s: %w", pd.Namespace, pd.Name, err)
	}
	np.server, err = hbone.NewServer(hbone.ServerConfig{
		Identity: id, SVIDs: p.cfg.Certs, Bundles: p.cfg.Certs,
		Handler: hbone.HandlerFunc(np.serveHBONE), DrainTimeout: p.cfg.DrainTimeout, Logger: np.log,
	})
	if err != nil {
		cancel()
		np.client.Close()
		return nil, fmt.Errorf("pod %s/%s: %w", pd.Namespace, pd.Name, err)
	}
	for _, port := range []uint16{OutboundPort, InboundPort, HBONEPort} {
		ln, err := pd.Sockets.Listen(ctx, port)
		if err != nil {
			np.closeListeners()
			cancel()
			np.client.Close()
			return nil, fmt.Errorf("pod %s/%s: %w", pd.Namespace, pd.Name, err)
		}
		np.lns = append(np.lns, ln)
	}
	np.wg.Go(func() { np.accept(np.lns[0], np.serveOutbound) })
	np.wg.Go(func() { np.accept(np.lns[1], np.servePlaintext) })
	np.wg.Go(func() {
		if err := np.server.Serve(ctx, np.lns[2]); err != nil {
			np.log.Warn("HBONE listener failed", "err", err)
		}
	})
	np.wg.Go(func() { // fetch the certificate now rather than at the first connection
		rctx, cancel := context.WithTimeout(ctx, p.cfg.ReadyTimeout)
		defer cancel()
		if _, err := p.cfg.Certs.SVID(rctx, id); err != nil && ctx.Err() == nil {
			np.log.Warn("pod certificate not ready; its connections wait for it", "identity", id, "err", err)
		}
	})
	np.log.Info("pod enrolled: listening", "identity", id)
	return np, nil
}

func (pd *pod) closeListeners() {
	for _, ln := range pd.lns {
		ln.Close()
	}
}

// accept runs handle on every connection ln accepts until the pod stops.
func (pd *pod) accept(ln net.Listener, handle func(net.Conn)) {
	stop := context.AfterFunc(pd.ctx, func() { ln.Close() })
	defer stop()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if pd.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			pd.log.Warn("accept failed, retrying", "err", err, "backoff", backoff)
			select {
			case <-pd.ctx.Done():
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		pd.conns.Go(func() { handle(c) })
	}
}

// stop closes the listeners at once (a new ztunnel's listeners, bound with
// SO_REUSEPORT, take new connections), lets established connections drain
// for DrainTimeout, then closes them and releases the namespace.
func (pd *pod) stop() {
	pd.once.Do(func() {
		pd.cancel()
		pd.closeListeners()
		pd.wg.Wait() // the HBONE server drains its own tunnels
		done := make(chan struct{})
		go func() { pd.conns.Wait(); close(done) }()
		t := time.NewTimer(pd.p.cfg.DrainTimeout)
		select {
		case <-done:
		case <-t.C:
			pd.p.closePodConns(pd)
			<-done
		}
		t.Stop()
		pd.client.Close()
		if err := pd.Sockets.Close(); err != nil {
			pd.log.Debug("release pod netns", "err", err)
		}
		pd.log.Info("pod released")
	})
}

func (p *Proxy) closePodConns(pd *pod) {
	p.mu.Lock()
	var ts []*tracked
	for t := range p.conns {
		if t.pod == pd {
			ts = append(ts, t)
		}
	}
	p.mu.Unlock()
	for _, t := range ts {
		if t.closed.CompareAndSwap(false, true) {
			t.br.Close()
		}
	}
}

// awaitReady waits (ReadyTimeout at most) until the pod has its certificate
// and its workload is in the configuration, and returns the workload.
func (pd *pod) awaitReady(ctx context.Context) (*state.Workload, error) {
	// Almost always both are in hand: no timer, no context to make.
	if pd.p.cfg.Certs.Current(pd.id) != nil {
		if w := pd.p.cfg.Tables.Pod(pd.Namespace, pd.Name); w != nil {
			return w, nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, pd.p.cfg.ReadyTimeout)
	defer cancel()
	if _, err := pd.p.cfg.Certs.SVID(ctx, pd.id); err != nil {
		return nil, fmt.Errorf("%w: certificate: %w", ErrNotReady, err)
	}
	for {
		changed := pd.p.cfg.Tables.Changed()
		if w := pd.p.cfg.Tables.Pod(pd.Namespace, pd.Name); w != nil {
			return w, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: no configuration for the workload", ErrNotReady)
		}
	}
}

// relay relays between a (the connection this ztunnel accepted) and b in
// the background, tracking it as t so that policy changes and shutdown can
// close it, and reports it to the observer when it ends. No goroutine
// waits for it (an idle connection holds none): conns counts it instead.
func (pd *pod) relay(t *tracked, a, b net.Conn) {
	br := hbone.NewBridge(a, b)
	t.pod, t.br = pd, br
	pd.conns.Add(1)
	pd.p.track(t)
	pd.p.cfg.Observer.Opened(&t.info)
	br.Start(func(sent, recv int64, err error) {
		t.closed.Store(true)
		pd.p.cfg.Observer.Closed(&t.info, Bytes{Sent: sent, Received: recv}, t.unreported(sent, recv), err)
		pd.p.untrack(t)
		pd.conns.Done()
	})
}
