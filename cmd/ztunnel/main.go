// Command ztunnel is Ambit's per-node zero-trust tunnel: it serves the
// enrolled pods the node agent hands it, with configuration and
// certificates from istiod-lite. See docs/ztunnel.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"

	"github.com/ambit-mesh/ambit/internal/shutdown"
	"github.com/ambit-mesh/ambit/ztunnel/daemon"
)

func main() {
	daemon.TuneGC()
	cfg, err := parseFlags(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	d, err := daemon.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	// The first signal drains; a second one exits at once.
	ctx, stop := shutdown.Context(context.Background())
	defer stop()
	if err := d.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

func parseFlags(args []string, getenv func(string) string) (daemon.Config, error) {
	cfg := daemon.Default()
	fs := flag.NewFlagSet("ztunnel", flag.ContinueOnError)
	fs.StringVar(&cfg.NodeName, "node-name", getenv("NODE_NAME"), "node served (default $NODE_NAME)")
	fs.StringVar(&cfg.ControlPlane, "control-plane", cfg.ControlPlane, "istiod-lite xDS and CA address (TLS gRPC)")
	fs.StringVar(&cfg.ServerName, "server-name", cfg.ServerName, "name in istiod-lite's certificate (default: the control plane host)")
	fs.StringVar(&cfg.RootCertFile, "root-cert", cfg.RootCertFile, "mesh root certificate (PEM)")
	fs.StringVar(&cfg.TokenFile, "token", cfg.TokenFile, "projected ServiceAccount token, audience istio-ca")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", cfg.TrustDomain, "SPIFFE trust domain")
	fs.StringVar(&cfg.RunDir, "run-dir", cfg.RunDir, "node agent socket directory (the socket is <run-dir>/<node>/ztunnel.sock)")
	fs.StringVar(&cfg.HandoffSocket, "handoff-socket", cfg.HandoffSocket, "node agent hand-off socket (overrides -run-dir)")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", cfg.MetricsAddr, "Prometheus listen address (empty: off)")
	fs.StringVar(&cfg.HealthAddr, "health-addr", cfg.HealthAddr, "readiness listen address (empty: off)")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", cfg.AdminAddr, "admin (config dump) listen address; keep it on localhost")
	fs.DurationVar(&cfg.CertTTL, "cert-ttl", cfg.CertTTL, "certificate lifetime asked of the CA (0: its default)")
	fs.DurationVar(&cfg.ReadyTimeout, "ready-timeout", cfg.ReadyTimeout, "how long a connection waits for its pod's certificate and configuration")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", cfg.DrainTimeout, "how long established connections may go on at shutdown")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return cfg, fmt.Errorf("log level: %w", err)
	}
	cfg.Log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})).With("node", cfg.NodeName)
	return cfg, cfg.Validate()
}
