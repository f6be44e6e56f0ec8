package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/waypoint/model"
	"github.com/ambit-mesh/ambit/waypoint/server"
)

// runStatic serves with the identity and configuration of files (-cert,
// -key, -bundle, -config): for tests and running outside a cluster.
func runStatic(ctx context.Context, o options, log *slog.Logger) error {
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
	cfg := o.server
	cfg.Identity, cfg.Bundles, cfg.Logger = id, bundle, log
	cfg.SVIDs = hbone.SVIDSourceFunc(func(_ context.Context, want spiffeid.ID) (*x509svid.SVID, error) {
		if want != svid.ID {
			return nil, fmt.Errorf("no SVID for %s", want)
		}
		return svid, nil
	})
	if cfg.Tracing.ServiceName == "" {
		cfg.Tracing.ServiceName = id.Path()
	}
	wp, err := server.New(cfg)
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
	log.Info("waypoint starting (static)", "identity", id, "hbone", cfg.HBONEAddr)
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
