// Package xds is a delta xDS (incremental ADS) client for Ambit's resource
// types: it subscribes to every type with a wildcard, hands each response to
// a Handler, ACKs it or NACKs it with the Handler's error, reconnects with
// backoff, and on reconnect tells the server which versions it holds so that
// only differences come back. What the Handler applied stays applied while
// the server is away: the proxy keeps serving its last good configuration.
package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/ambit-mesh/ambit/internal/reconnect"
)

// Handler applies responses. Apply gets one response's resources and
// removals for typeURL; it should apply every good resource and return an
// error describing the bad ones, which NACKs the response (the versions of
// the bad resources are not recorded, so the server sends them again once
// fixed).
type Handler interface {
	Apply(typeURL string, resources []*discovery.Resource, removed []string) (rejected map[string]error)
}

// Config configures a Client.
type Config struct {
	// Conn is the gRPC connection to istiod-lite.
	Conn grpc.ClientConnInterface
	// NodeID names the subscriber ("ztunnel~<node>").
	NodeID string
	// Types are the type URLs subscribed to, in order.
	Types   []string
	Handler Handler
	// RetryMin and RetryMax bound the reconnect backoff (defaults 500 ms, 30 s).
	RetryMin, RetryMax time.Duration
	// Synced, if set, is called once after the first response of every type.
	Synced func()
	Log    *slog.Logger
}

// Client is a delta ADS client.
type Client struct {
	cfg      Config
	versions map[string]map[string]string // type -> name -> version held
	synced   bool
}

// NewClient returns a client; it does no I/O until Run.
func NewClient(cfg Config) (*Client, error) {
	if cfg.Conn == nil || cfg.NodeID == "" || len(cfg.Types) == 0 || cfg.Handler == nil {
		return nil, errors.New("xds: Config needs Conn, NodeID, Types and Handler")
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 500 * time.Millisecond
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(30*time.Second, cfg.RetryMin)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg, versions: map[string]map[string]string{}}
	for _, t := range cfg.Types {
		c.versions[t] = map[string]string{}
	}
	return c, nil
}

// Run keeps a stream open until ctx ends, reconnecting with backoff.
func (c *Client) Run(ctx context.Context) error {
	return reconnect.Loop(ctx, c.cfg.RetryMin, c.cfg.RetryMax, c.stream, func(err error, backoff time.Duration) {
		c.cfg.Log.Warn("xds stream ended; keeping the last configuration and reconnecting", "err", err, "backoff", backoff)
	})
}

func (c *Client) stream(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(c.cfg.Conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return fmt.Errorf("xds: open stream: %w", err)
	}
	node := &core.Node{Id: c.cfg.NodeID}
	for _, t := range c.cfg.Types {
		err := st.Send(&discovery.DeltaDiscoveryRequest{
			Node: node, TypeUrl: t, ResourceNamesSubscribe: []string{"*"},
			InitialResourceVersions: maps.Clone(c.versions[t]),
		})
		if err != nil {
			return fmt.Errorf("xds: subscribe %s: %w", t, err)
		}
	}
	c.cfg.Log.Info("xds stream open", "xds_node", c.cfg.NodeID)
	seen := map[string]bool{}
	for {
		resp, err := st.Recv()
		if err != nil {
			return fmt.Errorf("xds: receive: %w", err)
		}
		t := resp.GetTypeUrl()
		held, ok := c.versions[t]
		ack := &discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: t, ResponseNonce: resp.GetNonce()}
		if !ok {
			ack.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: "type not subscribed: " + t}
		} else {
			rejected := c.cfg.Handler.Apply(t, resp.GetResources(), resp.GetRemovedResources())
			for _, r := range resp.GetResources() {
				if rejected[r.GetName()] == nil {
					held[r.GetName()] = r.GetVersion()
				} else {
					delete(held, r.GetName())
				}
			}
			for _, name := range resp.GetRemovedResources() {
				delete(held, name)
			}
			if len(rejected) > 0 {
				ack.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: describe(rejected)}
				c.cfg.Log.Warn("xds: rejected resources (NACK); the others are applied", "type", t, "err", ack.ErrorDetail.Message)
			}
			seen[t] = true
		}
		if err := st.Send(ack); err != nil {
			return fmt.Errorf("xds: ack: %w", err)
		}
		if !c.synced && len(seen) == len(c.cfg.Types) {
			c.synced = true
			if c.cfg.Synced != nil {
				c.cfg.Synced()
			}
		}
	}
}

func describe(rejected map[string]error) string {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(rejected)) {
		errs = append(errs, fmt.Errorf("%s: %w", name, rejected[name]))
	}
	return errors.Join(errs...).Error()
}
