package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"golang.org/x/sync/errgroup"
)

// Default listen addresses (Istio's ports). The admin port shows every
// workload and certificate of the node, so it stays on localhost.
const (
	DefaultMetricsAddr = ":15020"
	DefaultHealthAddr  = ":15021"
	DefaultAdminAddr   = "127.0.0.1:15000"
)

// ServerConfig says what to serve where. An empty address serves nothing.
type ServerConfig struct {
	MetricsAddr, HealthAddr, AdminAddr string
	Metrics                            http.Handler
	Ready                              http.Handler
	Dump                               http.Handler
}

// Server serves metrics, readiness and the admin endpoints.
type Server struct {
	cfg ServerConfig
}

// NewServer returns a Server; it listens only in Run.
func NewServer(cfg ServerConfig) *Server { return &Server{cfg: cfg} }

// Mux returns the handlers of each port: metrics (/metrics and Istio's
// /stats/prometheus), health (/healthz/ready), admin (/config_dump,
// /debug/pprof/).
func (s *Server) Mux() (metrics, health, admin *http.ServeMux) {
	metrics, health, admin = http.NewServeMux(), http.NewServeMux(), http.NewServeMux()
	if s.cfg.Metrics != nil {
		metrics.Handle("GET /metrics", s.cfg.Metrics)
		metrics.Handle("GET /stats/prometheus", s.cfg.Metrics)
	}
	if s.cfg.Ready != nil {
		health.Handle("GET /healthz/ready", s.cfg.Ready)
		// Istio's ztunnel answers readiness on the metrics port too.
		metrics.Handle("GET /healthz/ready", s.cfg.Ready)
	}
	if s.cfg.Dump != nil {
		admin.Handle("GET /config_dump", s.cfg.Dump)
	}
	admin.HandleFunc("GET /debug/pprof/", pprof.Index)
	admin.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	admin.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return metrics, health, admin
}

// Run listens on the configured addresses and serves until ctx ends, then
// shuts the servers down (1 s for requests in flight).
func (s *Server) Run(ctx context.Context) error {
	metrics, health, admin := s.Mux()
	type listener struct {
		name string
		ln   net.Listener
		h    http.Handler
	}
	var lns []listener
	for _, l := range []struct {
		name, addr string
		h          http.Handler
	}{{"metrics", s.cfg.MetricsAddr, metrics}, {"health", s.cfg.HealthAddr, health}, {"admin", s.cfg.AdminAddr, admin}} {
		if l.addr == "" {
			continue
		}
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", l.addr)
		if err != nil {
			for _, o := range lns {
				o.ln.Close()
			}
			return fmt.Errorf("telemetry: %s listener: %w", l.name, err)
		}
		lns = append(lns, listener{l.name, ln, l.h})
	}
	g, ctx := errgroup.WithContext(ctx)
	for _, l := range lns {
		srv := &http.Server{Handler: l.h, ReadHeaderTimeout: 5 * time.Second}
		g.Go(func() error {
			if err := srv.Serve(l.ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("telemetry: %s server: %w", l.name, err)
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx) // past the timeout, connections are closed anyway
			return nil
		})
	}
	return g.Wait()
}
