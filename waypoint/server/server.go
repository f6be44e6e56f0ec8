// Package server assembles the waypoint: the HBONE listener (15008) feeding
// the proxy, Prometheus metrics (15020), health (15021) and the localhost
// admin endpoint (15000) with a config dump. Configuration arrives through
// [Server.Update].
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/waypoint/model"
	"github.com/ambit-mesh/ambit/waypoint/proxy"
	"github.com/ambit-mesh/ambit/waypoint/telemetry"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
)

// Default addresses (Istio's ports).
const (
	DefaultHBONEAddr   = ":15008"
	DefaultMetricsAddr = ":15020"
	DefaultHealthAddr  = ":15021"
	DefaultAdminAddr   = "127.0.0.1:15000"
)

// Config configures a waypoint. Identity, SVIDs and Bundles are required.
type Config struct {
	// Identity is the waypoint's SPIFFE id (its ServiceAccount's).
	Identity spiffeid.ID
	SVIDs    hbone.SVIDSource
	Bundles  x509bundle.Source
	// Listen addresses; empty takes the default, "-" turns one off.
	HBONEAddr, MetricsAddr, HealthAddr, AdminAddr string
	Tracing                                       telemetry.TracingConfig
	// DialTCP opens the TCP connections of upstream tunnels
	// (hbone.ClientConfig.DialTCP); nil dials from this host. Tests use it
	// to dial from the waypoint's own network namespace.
	DialTCP func(ctx context.Context, src netip.Addr, dst netip.AddrPort) (net.Conn, error)
	// Proxy holds the data path's tunables; Identity, Dialer, Metrics,
	// Tracing and Logger in it are set by New.
	Proxy  proxy.Config
	Logger *slog.Logger
}

// Server is a waypoint.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *telemetry.Metrics
	tracing *telemetry.Tracing
	client  *hbone.Client
	hbone   *hbone.Server
	proxy   *proxy.Proxy
	ready   atomic.Bool
	snap    atomic.Pointer[model.Snapshot]
}

// New builds a waypoint; it opens nothing.
func New(cfg Config) (*Server, error) {
	if cfg.Identity.IsZero() || cfg.SVIDs == nil || cfg.Bundles == nil {
		return nil, errors.New("waypoint: Config needs Identity, SVIDs and Bundles")
	}
	for _, a := range []struct {
		p   *string
		def string
	}{{&cfg.HBONEAddr, DefaultHBONEAddr}, {&cfg.MetricsAddr, DefaultMetricsAddr}, {&cfg.HealthAddr, DefaultHealthAddr}, {&cfg.AdminAddr, DefaultAdminAddr}} {
		if *a.p == "" {
			*a.p = a.def
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log}
	var err error
	if s.metrics, err = telemetry.NewMetrics(); err != nil {
		return nil, fmt.Errorf("waypoint: %w", err)
	}
	if s.tracing, err = telemetry.NewTracing(cfg.Tracing); err != nil {
		return nil, fmt.Errorf("waypoint: %w", err)
	}
	if s.client, err = hbone.NewClient(hbone.ClientConfig{SVIDs: cfg.SVIDs, Bundles: cfg.Bundles, DialTCP: cfg.DialTCP, Logger: log}); err != nil {
		return nil, fmt.Errorf("waypoint: %w", err)
	}
	pc := cfg.Proxy
	pc.Identity, pc.Dialer, pc.Metrics, pc.Tracing, pc.Logger = cfg.Identity, s.client, s.metrics, s.tracing, log
	if s.proxy, err = proxy.New(pc); err != nil {
		return nil, fmt.Errorf("waypoint: %w", err)
	}
	if s.hbone, err = hbone.NewServer(hbone.ServerConfig{
		Identity: cfg.Identity, SVIDs: cfg.SVIDs, Bundles: cfg.Bundles, Handler: s.proxy, Logger: log,
	}); err != nil {
		return nil, fmt.Errorf("waypoint: %w", err)
	}
	s.snap.Store(&model.Snapshot{})
	return s, nil
}

// Update applies a configuration snapshot (see proxy.Proxy.Update); the
// first one makes the waypoint ready. The error names invalid routes and
// policies, which kept their previous version.
func (s *Server) Update(snap *model.Snapshot) error {
	err := s.proxy.Update(snap)
	s.snap.Store(snap)
	s.ready.Store(true)
	return err
}

// Metrics returns the metrics, for tests.
func (s *Server) Metrics() *telemetry.Metrics { return s.metrics }

// Run listens on the configured addresses and serves until ctx is
// canceled, then drains.
func (s *Server) Run(ctx context.Context) error {
	var lc net.ListenConfig
	listen := func(addr string) (net.Listener, error) {
		if addr == "-" {
			return nil, nil
		}
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("waypoint: listen: %w", err)
		}
		return ln, nil
	}
	hb, err := listen(s.cfg.HBONEAddr)
	if err != nil {
		return err
	}
	return s.Serve(ctx, hb, listen)
}

// Serve is Run with the HBONE listener given (tests pass their own);
// listen opens the others.
func (s *Server) Serve(ctx context.Context, hboneLn net.Listener, listen func(string) (net.Listener, error)) error {
	type endpoint struct {
		ln net.Listener
		h  http.Handler
	}
	var eps []endpoint
	for _, ep := range []struct {
		addr string
		h    http.Handler
	}{
		{s.cfg.MetricsAddr, s.metricsMux()},
		{s.cfg.HealthAddr, http.HandlerFunc(s.healthz)},
		{s.cfg.AdminAddr, http.HandlerFunc(s.configDump)},
	} {
		ln, err := listen(ep.addr)
		if err != nil {
			for _, e := range eps {
				e.ln.Close()
			}
			if hboneLn != nil {
				hboneLn.Close()
			}
			return err
		}
		if ln != nil {
			eps = append(eps, endpoint{ln, ep.h})
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.proxy.Run(ctx) })
	if hboneLn != nil {
		g.Go(func() error { return s.hbone.Serve(ctx, hboneLn) })
	}
	for _, ep := range eps {
		srv := &http.Server{Handler: ep.h, ReadHeaderTimeout: 5 * time.Second}
		g.Go(func() error {
			err := srv.Serve(ep.ln)
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("waypoint: serve %s: %w", ep.ln.Addr(), err)
		})
		g.Go(func() error {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	err := g.Wait()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return errors.Join(err, s.client.Close(), s.tracing.Shutdown(sctx))
}

func (s *Server) metricsMux() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", s.metrics.Handler())
	mux.Handle("/stats/prometheus", s.metrics.Handler())
	return mux
}

// healthz answers /healthz/ready: ready once configuration has arrived.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/healthz/ready" {
		http.NotFound(w, r)
		return
	}
	if !s.ready.Load() {
		http.Error(w, "waiting for configuration", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// configDump serves the current snapshot as JSON on the admin port.
func (s *Server) configDump(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/config_dump" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s.snap.Load()); err != nil {
		s.log.Debug("config dump", "err", err)
	}
}
