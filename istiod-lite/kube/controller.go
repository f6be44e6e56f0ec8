package kube

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/ambit-mesh/ambit/istiod-lite/model"
)

// ControllerConfig configures the model loop.
type ControllerConfig struct {
	// Base carries the mesh settings (trust domain, root namespace...) of every snapshot.
	Base model.Inputs
	// Debounce is how long to wait after a change for more to arrive (default 100 ms).
	Debounce time.Duration
	// Consumers get every new model, in order, from the loop's goroutine; they must
	// not block (xds.Server.Update, StatusWriter.Notify, ...).
	Consumers []func(*model.Model)
	Log       *slog.Logger
}

// Controller keeps the model current: level-triggered, it rebuilds the whole model
// from the caches after any change, so a missed or repeated event cannot leave it wrong.
type Controller struct {
	cfg     ControllerConfig
	sources *Sources
	dirty   chan struct{}
	latest  atomic.Pointer[model.Model]
}

// NewController sets up the informers; nothing runs until Run.
func NewController(c Clients, cfg ControllerConfig) (*Controller, error) {
	if cfg.Debounce == 0 {
		cfg.Debounce = 100 * time.Millisecond
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	ctl := &Controller{cfg: cfg, dirty: make(chan struct{}, 1)}
	src, err := NewSources(c, ctl.markDirty)
	if err != nil {
		return nil, err
	}
	ctl.sources = src
	return ctl, nil
}

func (c *Controller) markDirty() {
	select {
	case c.dirty <- struct{}{}:
	default:
	}
}

// OnModel adds consumers of every new model; call it before Run.
func (c *Controller) OnModel(consumers ...func(*model.Model)) {
	c.cfg.Consumers = append(c.cfg.Consumers, consumers...)
}

// Sources are the informer caches, shared with the CA and the waypoint deployer.
func (c *Controller) Sources() *Sources { return c.sources }

// Latest is the newest model, nil before the caches synced.
func (c *Controller) Latest() *model.Model { return c.latest.Load() }

// Run starts the informers, builds the first model once they synced, then rebuilds
// after changes until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	defer c.sources.Shutdown()
	if err := c.sources.Start(ctx); err != nil {
		return err
	}
	c.markDirty()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.dirty:
		}
		// Coalesce a burst (a rollout, kubectl apply -f dir) into one build.
		t := time.NewTimer(c.cfg.Debounce)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		select {
		case <-c.dirty:
		default:
		}
		if err := c.rebuild(); err != nil {
			c.cfg.Log.Error("model: rebuild failed; serving the previous model", "err", err)
		}
	}
}

func (c *Controller) rebuild() error {
	start := time.Now()
	in, err := c.sources.Snapshot(c.cfg.Base)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	m := model.BuildFrom(c.latest.Load(), in)
	c.latest.Store(m)
	for _, consume := range c.cfg.Consumers {
		consume(m)
	}
	c.cfg.Log.Debug("model: rebuilt", "workloads", len(m.Workloads), "services", len(m.Services),
		"policies", len(m.Policies), "took", time.Since(start))
	return nil
}
