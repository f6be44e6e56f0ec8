package daemon

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/ambit-mesh/ambit/internal/identity"
	"github.com/ambit-mesh/ambit/internal/xds"
	"github.com/ambit-mesh/ambit/waypoint/model"
	"github.com/ambit-mesh/ambit/waypoint/server"
	wxds "github.com/ambit-mesh/ambit/waypoint/xds"
)

// Daemon is an in-cluster waypoint.
type Daemon struct {
	cfg Config
	id  spiffeid.ID
	log *slog.Logger
}

// New validates cfg and returns a Daemon; it does no I/O.
func New(cfg Config) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("waypoint config: %w", err)
	}
	id, _ := cfg.Identity() // validated
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Daemon{cfg: cfg, id: id, log: log}, nil
}

// Run connects to istiod-lite and serves until ctx ends.
func (d *Daemon) Run(ctx context.Context) error {
	conn, roots, err := identity.ControlPlane{Addr: d.cfg.ControlPlane, ServerName: d.cfg.serverName(),
		RootFile: d.cfg.RootCertFile, TokenFile: d.cfg.TokenFile, Domain: d.id.TrustDomain()}.Dial()
	if err != nil {
		return fmt.Errorf("waypoint: %w", err)
	}
	defer conn.Close()
	return d.Serve(ctx, conn, roots)
}

// Serve is Run over an established connection to istiod-lite (tests pass
// their own), with roots as the initial trust bundle.
func (d *Daemon) Serve(ctx context.Context, conn grpc.ClientConnInterface, roots []*x509.Certificate) error {
	certs, err := identity.NewManager(identity.Config{
		Issuer:      identity.NewCAClient(conn, "", d.cfg.CertTTL), // the connection carries the token
		TrustDomain: d.id.TrustDomain(), Roots: roots, Log: d.log.With("component", "certificates"),
	})
	if err != nil {
		return fmt.Errorf("waypoint: %w", err)
	}
	sc := d.cfg.Server
	sc.Identity, sc.SVIDs, sc.Bundles, sc.Logger = d.id, certs, certs, d.log
	wp, err := server.New(sc)
	if err != nil {
		return err
	}
	gate := &gate{next: wp, log: d.log}
	store := wxds.NewStore(d.cfg.Ref(), gate, d.log.With("component", "xds"))
	client, err := xds.NewClient(xds.Config{
		Conn: conn, NodeID: d.cfg.nodeID(), Types: wxds.Types(), Handler: store,
		Synced: store.Synced, Log: d.log.With("component", "xds"),
	})
	if err != nil {
		return fmt.Errorf("waypoint: %w", err)
	}
	d.log.Info("waypoint starting", "identity", d.id, "gateway", d.cfg.Ref().Key(), "control_plane", d.cfg.ControlPlane)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return wp.Run(ctx) })
	g.Go(func() error { return client.Run(ctx) })
	g.Go(func() error { return certs.Run(ctx) })
	g.Go(func() error { return d.firstCertificate(ctx, certs, gate) })
	if err := g.Wait(); err != nil {
		return fmt.Errorf("waypoint: %w", err)
	}
	return nil
}

// firstCertificate fetches the waypoint's certificate until it has one,
// then opens the gate; the Manager renews it from then on.
func (d *Daemon) firstCertificate(ctx context.Context, certs *identity.Manager, g *gate) error {
	const maxBackoff = 30 * time.Second
	backoff := 500 * time.Millisecond
	for {
		_, err := certs.SVID(ctx, d.id)
		if err == nil {
			g.open()
			return nil
		}
		if ctx.Err() != nil {
			return nil //nolint:nilerr // stopping
		}
		d.log.Warn("no certificate yet; retrying", "identity", d.id, "err", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// gate holds snapshots back until the waypoint has a certificate, so that
// readiness (the server's first snapshot) means it can serve.
type gate struct {
	next wxds.Updater
	log  *slog.Logger

	mu      sync.Mutex
	opened  bool
	pending *model.Snapshot
}

// Update passes snap on, or keeps it until the gate opens.
func (g *gate) Update(snap *model.Snapshot) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.opened {
		g.pending = snap
		return nil
	}
	return g.next.Update(snap)
}

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.opened = true
	if g.pending == nil {
		return
	}
	if err := g.next.Update(g.pending); err != nil {
		g.log.Warn("proxy kept the previous version of invalid routes or policies", "err", err)
	}
	g.pending = nil
}
