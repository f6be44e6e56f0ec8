package daemon

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/ambit-mesh/ambit/api/workload"
	"github.com/ambit-mesh/ambit/internal/identity"
	"github.com/ambit-mesh/ambit/internal/logging"
	"github.com/ambit-mesh/ambit/internal/xds"
	"github.com/ambit-mesh/ambit/ztunnel/inpod"
	"github.com/ambit-mesh/ambit/ztunnel/proxy"
	"github.com/ambit-mesh/ambit/ztunnel/state"
	"github.com/ambit-mesh/ambit/ztunnel/telemetry"
)

// Readiness conditions.
const (
	condXDS     = "xds"
	condHandoff = "handoff"
)

// Daemon is one ztunnel.
type Daemon struct {
	cfg Config
	log *slog.Logger
}

// New checks cfg and returns a Daemon; it does no I/O.
func New(cfg Config) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ztunnel config: %w", err)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Daemon{cfg: cfg, log: log}, nil
}

// Run connects to istiod-lite and the node agent and serves until ctx ends;
// then it stops accepting and drains established connections for
// DrainTimeout.
func (d *Daemon) Run(ctx context.Context) error {
	td, err := spiffeid.TrustDomainFromString(d.cfg.TrustDomain)
	if err != nil {
		return fmt.Errorf("ztunnel: %w", err) // validated in New
	}
	conn, roots, err := identity.ControlPlane{Addr: d.cfg.ControlPlane, ServerName: d.cfg.serverName(),
		RootFile: d.cfg.RootCertFile, TokenFile: d.cfg.TokenFile, Domain: td}.Dial()
	if err != nil {
		return fmt.Errorf("ztunnel: %w", err)
	}
	defer conn.Close()
	p, err := d.build(conn, roots)
	if err != nil {
		return err
	}
	return p.run(ctx)
}

// parts are the running pieces of a ztunnel.
type parts struct {
	log       *slog.Logger
	tables    *state.Tables
	certs     *identity.Manager
	proxy     *proxy.Proxy
	handoff   *inpod.Client
	xds       *xds.Client
	telemetry *telemetry.Server
	ready     *telemetry.Ready
	accessLog *logging.Async

	configured     chan struct{} // closed once the first xDS response of every type is in
	configuredOnce sync.Once
}

// build makes the parts over a connection to istiod-lite.
func (d *Daemon) build(conn grpc.ClientConnInterface, roots []*x509.Certificate) (*parts, error) {
	cfg := d.cfg
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("ztunnel: trust domain: %w", err)
	}
	p := &parts{log: d.log, tables: state.NewTables(), ready: telemetry.NewReady(condXDS, condHandoff), configured: make(chan struct{})}
	p.certs, err = identity.NewManager(identity.Config{
		Issuer:      identity.NewCAClient(conn, "", cfg.CertTTL), // the connection carries the token
		TrustDomain: td, Roots: roots, Log: d.log.With("component", "certificates"),
	})
	if err != nil {
		return nil, fmt.Errorf("ztunnel: %w", err)
	}
	// Access lines (one per connection) are formatted and written off the
	// data path.
	p.accessLog = logging.NewAsync(d.log.With("component", "access").Handler(), 0)
	built := false
	defer func() {
		if !built {
			p.accessLog.Close()
		}
	}()
	rec, err := telemetry.NewRecorder(p.tables, slog.New(p.accessLog))
	if err != nil {
		return nil, fmt.Errorf("ztunnel: %w", err)
	}
	if err := rec.Registry().Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "ambit_ztunnel_access_log_dropped_total",
		Help: "Access log lines dropped because the log writer fell behind",
	}, func() float64 { return float64(p.accessLog.Dropped()) })); err != nil {
		return nil, fmt.Errorf("ztunnel: %w", err)
	}
	p.proxy, err = proxy.New(proxy.Config{
		Tables: p.tables, Certs: p.certs, TrustDomain: td, ReadyTimeout: cfg.ReadyTimeout,
		DrainTimeout: cfg.DrainTimeout, Observer: rec, Log: d.log.With("component", "proxy"),
	})
	if err != nil {
		return nil, fmt.Errorf("ztunnel: %w", err)
	}
	rec.BeforeScrape(p.proxy.ReportProgress)
	p.handoff, err = inpod.New(inpod.Config{
		Socket: cfg.Socket(), Proxy: p.proxy, Log: d.log.With("component", "handoff"),
		Synced: func() { p.synced(condHandoff) },
	})
	if err != nil {
		return nil, fmt.Errorf("ztunnel: %w", err)
	}
	p.xds, err = xds.NewClient(xds.Config{
		Conn: conn, NodeID: cfg.NodeID(), Types: []string{workload.AddressType, workload.AuthorizationType},
		Handler: p.tables, Synced: func() { p.synced(condXDS) }, Log: d.log.With("component", "xds"),
	})
	if err != nil {
		return nil, fmt.Errorf("ztunnel: %w", err)
	}
	p.telemetry = telemetry.NewServer(telemetry.ServerConfig{
		MetricsAddr: cfg.MetricsAddr, HealthAddr: cfg.HealthAddr, AdminAddr: cfg.AdminAddr,
		Metrics: rec.Handler(), Ready: p.ready,
		Dump: telemetry.Sources{Node: cfg.NodeName, Tables: p.tables.Dump, Certificates: p.certs.Certificates, Pods: p.proxy.PodInfos},
	})
	built = true
	return p, nil
}

func (p *parts) synced(condition string) {
	if condition == condXDS {
		p.configuredOnce.Do(func() { close(p.configured) })
	}
	p.ready.Done(condition)
	if len(p.ready.Pending()) == 0 {
		p.log.Info("ready: configuration and the node agent's pods are in")
	} else {
		p.log.Info("synced", "condition", condition, "waiting for", p.ready.Pending())
	}
}

// run runs every part until ctx ends or one fails.
//
// The hand-off client connects only once the proxy runs and the configuration
// is in: during a rollout the node agent's snapshot makes this ztunnel bind
// every pod's listeners beside the old ztunnel's (SO_REUSEPORT), and the
// kernel spreads new connections over both at once, so a ztunnel without
// configuration would make some of them wait and be refused. Until then the
// old ztunnel serves alone; a ztunnel that never gets its configuration never
// becomes ready, so a surge rollout stops there rather than replace a working
// one.
//
// When ctx ends the proxy stops accepting and drains; the hand-off client
// disconnects (the node agent gives new pods to the newer ztunnel). Telemetry
// keeps serving until the drain is over, so that the connections closed
// meanwhile are counted where they can be scraped.
func (p *parts) run(ctx context.Context) error {
	defer p.accessLog.Close() // after the drain: its lines are written
	g, gctx := errgroup.WithContext(ctx)
	// Telemetry ends when the proxy has drained (whatever ended the group).
	tctx, stopTelemetry := context.WithCancel(context.WithoutCancel(gctx))
	defer stopTelemetry()
	g.Go(func() error { return p.telemetry.Run(tctx) })
	g.Go(func() error { return p.xds.Run(gctx) })
	g.Go(func() error { return p.certs.Run(gctx) })
	g.Go(func() error {
		ReleaseMemoryWhenQuiet(gctx, p.log)
		return nil
	})
	g.Go(func() error {
		defer stopTelemetry()
		return p.proxy.Run(gctx)
	})
	g.Go(func() error {
		for _, c := range []<-chan struct{}{p.proxy.Running(), p.configured} {
			select {
			case <-c:
			case <-gctx.Done():
				return nil
			}
		}
		p.log.Info("configuration in: taking the node agent's pods")
		return p.handoff.Run(gctx)
	})
	if err := g.Wait(); err != nil {
		return fmt.Errorf("ztunnel: %w", err)
	}
	return nil
}
