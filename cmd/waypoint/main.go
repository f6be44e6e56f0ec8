// Command waypoint is Ambit's L7 proxy for ambient mode: it accepts HBONE
// from ztunnels on 15008 and applies routes, L7 policy, load balancing and
// request telemetry (metrics on 15020, health on 15021). See
// docs/waypoint.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/waypoint/model"
	"github.com/ambit-mesh/ambit/waypoint/proxy"
	"github.com/ambit-mesh/ambit/waypoint/server"
	"github.com/ambit-mesh/ambit/waypoint/telemetry"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// options are the command line.
type options struct {
	identity, certFile, keyFile, bundleFile, configFile string
	hboneAddr, metricsAddr, healthAddr, adminAddr       string
	otlpEndpoint                                        string
	otlpInsecure                                        bool
	sampling                                            float64
	detectTimeout, readHeaderTimeout, idleTimeout       time.Duration
	logLevel                                            string
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("waypoint", flag.ContinueOnError)
	defID := ""
	if ns, sa := os.Getenv("POD_NAMESPACE"), os.Getenv("SERVICE_ACCOUNT"); ns != "" && sa != "" {
		defID = "spiffe://cluster.local/ns/" + ns + "/sa/" + sa
	}
	fs.StringVar(&o.identity, "identity", defID, "SPIFFE id of this waypoint (default from POD_NAMESPACE and SERVICE_ACCOUNT)")
	fs.StringVar(&o.certFile, "cert", "", "PEM certificate chain of the identity (required)")
	fs.StringVar(&o.keyFile, "key", "", "PEM private key of the identity (required)")
	fs.StringVar(&o.bundleFile, "bundle", "", "PEM trust bundle of the identity's trust domain (required)")
	fs.StringVar(&o.configFile, "config", "", "static configuration snapshot (JSON of model.Snapshot) until xDS exists")
	fs.StringVar(&o.hboneAddr, "hbone-addr", server.DefaultHBONEAddr, "HBONE listen address")
	fs.StringVar(&o.metricsAddr, "metrics-addr", server.DefaultMetricsAddr, "Prometheus listen address (- for none)")
	fs.StringVar(&o.healthAddr, "health-addr", server.DefaultHealthAddr, "readiness listen address (- for none)")
	fs.StringVar(&o.adminAddr, "admin-addr", server.DefaultAdminAddr, "admin (config dump) listen address (- for none)")
	fs.StringVar(&o.otlpEndpoint, "otlp-endpoint", "", "OTLP/gRPC collector host:port; empty: no span export")
	fs.BoolVar(&o.otlpInsecure, "otlp-insecure", false, "send OTLP without TLS")
	fs.Float64Var(&o.sampling, "trace-sampling", telemetry.DefaultSampling, "ratio of new traces sampled")
	fs.DurationVar(&o.detectTimeout, "detect-timeout", proxy.DefaultDetectTimeout, "protocol detection timeout")
	fs.DurationVar(&o.readHeaderTimeout, "read-header-timeout", proxy.DefaultReadHeaderTimeout, "bound on reading request headers")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", proxy.DefaultIdleTimeout, "idle client connection timeout")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case o.identity == "":
		return o, errors.New("-identity is required (or POD_NAMESPACE and SERVICE_ACCOUNT)")
	case o.certFile == "" || o.keyFile == "" || o.bundleFile == "":
		return o, errors.New("-cert, -key and -bundle are required")
	case o.sampling < 0 || o.sampling > 1:
		return o, fmt.Errorf("-trace-sampling %v not in [0, 1]", o.sampling)
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second signal kills at once
	}()
	if err := run(ctx, o, log); err != nil {
		log.Error("waypoint failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, log *slog.Logger) error {
	id, err := spiffeid.FromString(o.identity)
	if err != nil {
		return fmt.Errorf("-identity: %w", err)
	}
	svid, err := x509svid.Load(o.certFile, o.keyFile)
	if err != nil {
		return fmt.Errorf("load SVID: %w", err)
	}
	if svid.ID != id {
		return fmt.Errorf("certificate is for %s, not %s", svid.ID, id)
	}
	bundle, err := x509bundle.Load(id.TrustDomain(), o.bundleFile)
	if err != nil {
		return fmt.Errorf("load trust bundle: %w", err)
	}
	wp, err := server.New(server.Config{
		Identity: id,
		SVIDs: hbone.SVIDSourceFunc(func(_ context.Context, want spiffeid.ID) (*x509svid.SVID, error) {
			if want != svid.ID {
				return nil, fmt.Errorf("no SVID for %s", want)
			}
			return svid, nil
		}),
		Bundles:     bundle,
		HBONEAddr:   o.hboneAddr,
		MetricsAddr: o.metricsAddr,
		HealthAddr:  o.healthAddr,
		AdminAddr:   o.adminAddr,
		Tracing: telemetry.TracingConfig{
			OTLPEndpoint: o.otlpEndpoint, Insecure: o.otlpInsecure, Sampling: o.sampling, ServiceName: id.Path(),
		},
		Proxy: proxy.Config{
			DetectTimeout: o.detectTimeout, ReadHeaderTimeout: o.readHeaderTimeout, IdleTimeout: o.idleTimeout,
		},
		Logger: log,
	})
	if err != nil {
		return err
	}
	if o.configFile != "" {
		snap, err := loadSnapshot(o.configFile)
		if err != nil {
			return err
		}
		if err := wp.Update(snap); err != nil {
			log.Warn("configuration partly invalid", "err", err)
		}
	}
	log.Info("waypoint starting", "identity", id, "hbone", o.hboneAddr)
	return wp.Run(ctx)
}

func loadSnapshot(path string) (*model.Snapshot, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	var snap model.Snapshot
	if err := json.Unmarshal(b, &snap); err != nil {
		return nil, fmt.Errorf("parse config %s: %w", path, err)
	}
	return &snap, nil
}
