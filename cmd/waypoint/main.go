// Command waypoint is Ambit's L7 proxy for ambient mode: it accepts HBONE
// from ztunnels on 15008 and applies routes, L7 policy, load balancing and
// request telemetry (metrics on 15020, health on 15021). In a cluster (the
// default) it takes its identity from the pod istiod-lite's deployer made,
// its certificate from istiod-lite's CA and its configuration over xDS;
// with -cert it runs on static files instead (tests). See docs/waypoint.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/ambit-mesh/ambit/internal/shutdown"
	"github.com/ambit-mesh/ambit/waypoint/daemon"
	"github.com/ambit-mesh/ambit/waypoint/proxy"
	"github.com/ambit-mesh/ambit/waypoint/server"
	"github.com/ambit-mesh/ambit/waypoint/telemetry"
)

// options are the command line.
type options struct {
	// Static mode (-cert): identity, certificate and configuration from files.
	identity, certFile, keyFile, bundleFile, configFile string
	// In-cluster mode: everything but the listeners and tunables.
	cluster daemon.Config
	// Both.
	server   server.Config
	logLevel string
}

// static reports whether the waypoint runs on files rather than istiod-lite.
func (o options) static() bool { return o.certFile != "" }

// parseFlags reads args, with defaults from the environment istiod-lite's
// deployer sets (getenv).
func parseFlags(args []string, getenv func(string) string) (options, error) {
	o := options{cluster: daemon.Default()}
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("waypoint", flag.ContinueOnError)
	c := &o.cluster
	fs.StringVar(&c.Namespace, "namespace", getenv("POD_NAMESPACE"), "namespace of the waypoint (env POD_NAMESPACE)")
	fs.StringVar(&c.ServiceAccount, "service-account", getenv("SERVICE_ACCOUNT"), "ServiceAccount of the waypoint, its identity (env SERVICE_ACCOUNT)")
	fs.StringVar(&c.Gateway, "gateway", getenv("GATEWAY_NAME"), "the waypoint's Gateway (env GATEWAY_NAME)")
	fs.StringVar(&c.NodeID, "xds-node-id", getenv("XDS_NODE_ID"), "xDS node id, must be waypoint~<namespace>~<gateway> (env XDS_NODE_ID)")
	fs.StringVar(&c.ControlPlane, "control-plane", env("CONTROL_PLANE_ADDR", c.ControlPlane), "istiod-lite xDS and CA address (env CONTROL_PLANE_ADDR)")
	fs.StringVar(&c.ServerName, "control-plane-server-name", "", "name in istiod-lite's certificate (default: host of -control-plane)")
	fs.StringVar(&c.RootCertFile, "root-cert", env("ROOT_CERT_PATH", c.RootCertFile), "mesh root certificate, PEM (env ROOT_CERT_PATH)")
	fs.StringVar(&c.TokenFile, "token", env("TOKEN_PATH", c.TokenFile), "projected ServiceAccount token for istiod-lite (env TOKEN_PATH)")
	fs.StringVar(&c.TrustDomain, "trust-domain", env("TRUST_DOMAIN", c.TrustDomain), "mesh trust domain (env TRUST_DOMAIN)")
	fs.DurationVar(&c.CertTTL, "cert-ttl", 0, "certificate lifetime asked of the CA (0: the CA's default)")

	fs.StringVar(&o.identity, "identity", "", "static mode: SPIFFE id (default from -namespace and -service-account)")
	fs.StringVar(&o.certFile, "cert", "", "static mode: PEM certificate chain of the identity (turns static mode on)")
	fs.StringVar(&o.keyFile, "key", "", "static mode: PEM private key of the identity")
	fs.StringVar(&o.bundleFile, "bundle", "", "static mode: PEM trust bundle of the identity's trust domain")
	fs.StringVar(&o.configFile, "config", "", "static mode: configuration snapshot (JSON of model.Snapshot)")

	s := &o.server
	fs.StringVar(&s.HBONEAddr, "hbone-addr", server.DefaultHBONEAddr, "HBONE listen address")
	fs.StringVar(&s.MetricsAddr, "metrics-addr", server.DefaultMetricsAddr, "Prometheus listen address (- for none)")
	fs.StringVar(&s.HealthAddr, "health-addr", server.DefaultHealthAddr, "readiness listen address (- for none)")
	fs.StringVar(&s.AdminAddr, "admin-addr", server.DefaultAdminAddr, "admin (config dump) listen address (- for none)")
	fs.StringVar(&s.Tracing.OTLPEndpoint, "otlp-endpoint", "", "OTLP/gRPC collector host:port; empty: no span export")
	fs.BoolVar(&s.Tracing.Insecure, "otlp-insecure", false, "send OTLP without TLS")
	fs.Float64Var(&s.Tracing.Sampling, "trace-sampling", telemetry.DefaultSampling, "ratio of new traces sampled")
	fs.DurationVar(&s.Proxy.DetectTimeout, "detect-timeout", proxy.DefaultDetectTimeout, "protocol detection timeout")
	fs.DurationVar(&s.Proxy.ReadHeaderTimeout, "read-header-timeout", proxy.DefaultReadHeaderTimeout, "bound on reading request headers")
	fs.DurationVar(&s.Proxy.IdleTimeout, "idle-timeout", proxy.DefaultIdleTimeout, "idle client connection timeout")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if s.Tracing.Sampling < 0 || s.Tracing.Sampling > 1 {
		return o, fmt.Errorf("-trace-sampling %v not in [0, 1]", s.Tracing.Sampling)
	}
	if !o.static() {
		if o.keyFile != "" || o.bundleFile != "" || o.configFile != "" || o.identity != "" {
			return o, errors.New("-identity, -key, -bundle and -config need -cert (static mode)")
		}
		return o, o.cluster.Validate()
	}
	if o.identity == "" && c.Namespace != "" && c.ServiceAccount != "" {
		id, err := c.Identity()
		if err != nil {
			return o, err
		}
		o.identity = id.String()
	}
	switch {
	case o.identity == "":
		return o, errors.New("-identity is required (or -namespace and -service-account)")
	case o.keyFile == "" || o.bundleFile == "":
		return o, errors.New("-cert, -key and -bundle go together")
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "waypoint:", err)
		os.Exit(2)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "waypoint: -log-level:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	// The first signal drains; a second one exits at once.
	ctx, stop := shutdown.Context(context.Background())
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error("waypoint failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, log *slog.Logger) error {
	if o.static() {
		return runStatic(ctx, o, log)
	}
	cfg := o.cluster
	cfg.Server, cfg.Log = o.server, log
	if cfg.Server.Tracing.ServiceName == "" {
		cfg.Server.Tracing.ServiceName = cfg.Gateway + "." + cfg.Namespace
	}
	d, err := daemon.New(cfg)
	if err != nil {
		return err
	}
	return d.Run(ctx)
}
