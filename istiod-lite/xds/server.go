package xds

import (
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ambit-mesh/ambit/istiod-lite/model"
)

// Config configures a Server.
type Config struct {
	// Log receives connection, NACK and refusal logs.
	Log *slog.Logger
	// Authorizer, when set, must admit each stream's proxy (nil admits all: tests).
	Authorizer ProxyAuthorizer
	// Observer, when set, is told about connections and pushes.
	Observer Observer
}

// Server serves delta xDS from the latest model.
type Server struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer

	cfg Config

	mu      sync.Mutex
	model   *model.Model
	updated time.Time
	conns   map[*conn]struct{}
}

// conn is one connected subscriber; notify wakes its stream after a model update.
type conn struct {
	proxy  Proxy
	notify chan struct{}
}

// NewServer returns a server with no model yet: subscribers wait for the first Update.
func NewServer(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, conns: map[*conn]struct{}{}}
}

// Register adds the Aggregated Discovery Service to a gRPC server.
func (s *Server) Register(g grpc.ServiceRegistrar) {
	discovery.RegisterAggregatedDiscoveryServiceServer(g, s)
}

// Update makes m the model served and wakes every subscriber to send what changed.
func (s *Server) Update(m *model.Model) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.model, s.updated = m, time.Now()
	for c := range s.conns {
		select {
		case c.notify <- struct{}{}:
		default: // already woken: it will read the newest model
		}
	}
}

// Connected is the number of subscribers.
func (s *Server) Connected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *Server) current() (*model.Model, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.model, s.updated
}

// DeltaAggregatedResources serves one subscriber.
func (s *Server) DeltaAggregatedResources(gs grpc.BidiStreamingServer[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse]) error {
	ctx := gs.Context()
	reqs := make(chan *discovery.DeltaDiscoveryRequest)
	recvErr := make(chan error, 1)
	// The receiver ends when Recv fails, which it does once this handler returns.
	go func() {
		for {
			req, err := gs.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()

	var first *discovery.DeltaDiscoveryRequest
	select {
	case first = <-reqs:
	case err := <-recvErr:
		return recvStatus(err)
	case <-ctx.Done():
		return nil
	}
	p, err := ParseProxyID(first.GetNode().GetId())
	if err != nil {
		s.cfg.Log.Warn("xds: refused stream", "err", err)
		return status.Error(codes.InvalidArgument, err.Error())
	}
	log := s.cfg.Log.With("proxy", p.ID)
	if s.cfg.Authorizer != nil {
		if err := s.cfg.Authorizer.AuthorizeProxy(ctx, p); err != nil {
			log.Warn("xds: refused stream", "err", err)
			return status.Error(codes.PermissionDenied, err.Error())
		}
	}
	c := &conn{proxy: p, notify: make(chan struct{}, 1)}
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		if s.cfg.Observer != nil {
			s.cfg.Observer.Disconnected(p)
		}
		log.Info("xds: disconnected")
	}()
	if s.cfg.Observer != nil {
		s.cfg.Observer.Connected(p)
	}
	log.Info("xds: connected")

	st := newStream(p)
	var lastModel *model.Model
	var lastView model.Resources
	view := func() (model.Resources, time.Time) {
		m, at := s.current()
		if m == nil {
			return nil, at
		}
		if m != lastModel {
			lastModel, lastView = m, p.view(m)
		}
		return lastView, at
	}
	req := first
	for {
		if req != nil {
			v, _ := view()
			resps, a, err := st.handle(req, v)
			if err != nil {
				log.Warn("xds: bad request", "err", err)
				return status.Error(codes.InvalidArgument, err.Error())
			}
			if a != nil && a.nack != "" {
				log.Warn("xds: update rejected by proxy", "type", a.typeURL, "nonce", a.nonce, "err", a.nack)
				if s.cfg.Observer != nil {
					s.cfg.Observer.Rejected(p, a.typeURL, a.nack)
				}
			}
			if err := s.send(gs, p, resps, 0); err != nil {
				return err
			}
		}
		req = nil
		select {
		case req = <-reqs:
		case <-c.notify:
			v, at := view()
			if v == nil {
				continue
			}
			if err := s.send(gs, p, st.push(v), time.Since(at)); err != nil {
				return err
			}
		case err := <-recvErr:
			return recvStatus(err)
		case <-ctx.Done():
			return nil
		}
	}
}

func (s *Server) send(gs grpc.BidiStreamingServer[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse], p Proxy, resps []*discovery.DeltaDiscoveryResponse, latency time.Duration) error {
	for _, r := range resps {
		if err := gs.Send(r); err != nil {
			return err
		}
		if s.cfg.Observer != nil {
			s.cfg.Observer.Pushed(p, r.TypeUrl, len(r.Resources)+len(r.RemovedResources), latency)
		}
	}
	return nil
}

// recvStatus maps the end of the request stream to the handler's result.
func recvStatus(err error) error {
	if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
		return nil
	}
	return err
}

// ensure the interface is implemented.
var _ discovery.AggregatedDiscoveryServiceServer = (*Server)(nil)
