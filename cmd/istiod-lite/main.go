// Command istiod-lite is Ambit's control plane: it watches Kubernetes, serves delta
// xDS and the certificate authority to ztunnels and waypoints, deploys waypoints and
// writes status. See docs/istiod-lite.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"k8s.io/klog/v2"

	"github.com/ambit-mesh/ambit/internal/shutdown"
	"github.com/ambit-mesh/ambit/istiod-lite/server"
)

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	// client-go logs through klog: into the same JSON stream, not plain
	// text on stderr beside it.
	klog.SetSlogLogger(cfg.Log.With("component", "client-go"))
	srv, err := server.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	// The first signal drains; a second one exits at once.
	ctx, stop := shutdown.Context(context.Background())
	defer stop()
	if err := srv.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

func parseFlags(args []string) (server.Config, error) {
	cfg := server.DefaultConfig()
	fs := flag.NewFlagSet("istiod-lite", flag.ContinueOnError)
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig path (default: in-cluster)")
	fs.StringVar(&cfg.Namespace, "namespace", envOr("POD_NAMESPACE", cfg.Namespace), "namespace of istiod-lite, the CA secret and the mesh root")
	fs.StringVar(&cfg.ServiceName, "service-name", cfg.ServiceName, "istiod-lite's Service name (in its serving certificate)")
	fs.StringVar(&cfg.PodName, "pod-name", os.Getenv("POD_NAME"), "this replica's name for leader election")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", cfg.TrustDomain, "SPIFFE trust domain")
	fs.StringVar(&cfg.GRPCAddr, "grpc-addr", cfg.GRPCAddr, "xDS and CA gRPC (TLS) listen address")
	fs.StringVar(&cfg.HealthAddr, "health-addr", cfg.HealthAddr, "readiness listen address (- for none)")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", cfg.MetricsAddr, "Prometheus listen address (- for none)")
	nodeProxies := fs.String("node-proxies", strings.Join(cfg.NodeProxies, ","), "comma-separated namespace/serviceaccount of ztunnels")
	fs.DurationVar(&cfg.CertTTL, "cert-ttl", cfg.CertTTL, "default workload certificate lifetime")
	fs.DurationVar(&cfg.MaxCertTTL, "max-cert-ttl", cfg.MaxCertTTL, "longest workload certificate lifetime granted")
	fs.BoolVar(&cfg.LeaderElection, "leader-elect", cfg.LeaderElection, "elect a leader for the status and waypoint writers")
	fs.StringVar(&cfg.Waypoint.Image, "waypoint-image", cfg.Waypoint.Image, "image of waypoint pods")
	pull := fs.String("waypoint-pull-policy", string(cfg.Waypoint.PullPolicy), "image pull policy of waypoint pods")
	fs.StringVar(&cfg.Waypoint.ControlPlane, "waypoint-control-plane", cfg.Waypoint.ControlPlane, "istiod-lite address given to waypoints")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	cfg.NodeProxies = nil
	for _, np := range strings.Split(*nodeProxies, ",") {
		if np = strings.TrimSpace(np); np != "" {
			cfg.NodeProxies = append(cfg.NodeProxies, np)
		}
	}
	cfg.Waypoint.PullPolicy = corev1.PullPolicy(*pull)
	cfg.Waypoint.TrustDomain = cfg.TrustDomain
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return cfg, fmt.Errorf("log level: %w", err)
	}
	cfg.Log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	return cfg, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
