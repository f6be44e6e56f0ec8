package xds

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"

	"github.com/ambit-mesh/ambit/api/workload"
	"github.com/ambit-mesh/ambit/waypoint/model"
)

// Types returns the type URLs a waypoint subscribes to, in order.
func Types() []string {
	return []string{workload.AddressType, workload.AuthorizationType, workload.RouteType}
}

// Updater takes a new snapshot; server.Server is one. Its error names
// routes and policies the proxy found invalid (they kept their previous
// version).
type Updater interface {
	Update(*model.Snapshot) error
}

// Store holds the resources received over delta xDS and, once every type
// has arrived (Synced), hands a freshly built snapshot to its Updater after
// every response. It implements internal/xds.Handler.
//
// A resource that does not decode or convert is rejected (NACKed) and its
// previous version, if any, stays; an invalid Authorization never seen
// valid before is kept so that Build fails it closed rather than leaving
// the policy out.
type Store struct {
	gateway model.Ref
	to      Updater
	log     *slog.Logger

	mu        sync.Mutex
	synced    bool
	addresses map[string]*workload.Address
	auths     map[string]*workload.Authorization
	routes    map[string]*workload.Route
}

// NewStore returns a Store for the waypoint Gateway gateway feeding to.
func NewStore(gateway model.Ref, to Updater, log *slog.Logger) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{
		gateway: gateway, to: to, log: log,
		addresses: map[string]*workload.Address{}, auths: map[string]*workload.Authorization{},
		routes: map[string]*workload.Route{},
	}
}

// Apply records one response's resources and removals for typeURL and, if
// the store is synced, pushes a new snapshot. It returns the rejected
// resources by name.
func (s *Store) Apply(typeURL string, resources []*discovery.Resource, removed []string) map[string]error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rejected := map[string]error{}
	switch typeURL {
	case workload.AddressType:
		for _, r := range resources {
			if err := s.applyAddress(r); err != nil {
				rejected[r.GetName()] = err
			}
		}
		for _, name := range removed {
			delete(s.addresses, name)
		}
	case workload.AuthorizationType:
		for _, r := range resources {
			if err := s.applyAuthorization(r); err != nil {
				rejected[r.GetName()] = err
			}
		}
		for _, name := range removed {
			delete(s.auths, name)
		}
	case workload.RouteType:
		for _, r := range resources {
			if err := s.applyRoute(r); err != nil {
				rejected[r.GetName()] = err
			}
		}
		for _, name := range removed {
			delete(s.routes, name)
		}
	default:
		for _, r := range resources {
			rejected[r.GetName()] = fmt.Errorf("unexpected type %s", typeURL)
		}
		return rejected
	}
	if s.synced {
		s.push()
	}
	return rejected
}

// Synced marks the store as holding every type and pushes the first
// snapshot. Until then nothing is pushed: a waypoint that knew its services
// but not yet their policies would serve them unprotected.
func (s *Store) Synced() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.synced = true
	s.push()
}

func (s *Store) applyAddress(r *discovery.Resource) error {
	a := &workload.Address{}
	if err := decode(r, workload.AddressType, a); err != nil {
		return err
	}
	var err error
	switch {
	case a.GetService() != nil:
		_, err = Service(a.GetService())
	case a.GetWorkload() != nil:
		w := a.GetWorkload()
		hosts := map[string]string{} // every service known, so that all ports are checked
		for h := range w.GetServices() {
			hosts[h] = h
		}
		_, err = Workload(w, hosts)
	default:
		err = errors.New("address is neither a workload nor a service")
	}
	if err != nil {
		return err
	}
	s.addresses[r.GetName()] = a
	return nil
}

func (s *Store) applyAuthorization(r *discovery.Resource) error {
	a := &workload.Authorization{}
	if err := decode(r, workload.AuthorizationType, a); err != nil {
		return err
	}
	if _, err := Policy(a); err != nil {
		if _, ok := s.auths[r.GetName()]; !ok {
			s.auths[r.GetName()] = a // fails closed in Build
		}
		return err
	}
	s.auths[r.GetName()] = a
	return nil
}

// applyRoute keeps a route that converts; one that does not keeps its previous
// version, and one never valid is left out (the proxy does the same with routes
// it cannot compile).
func (s *Store) applyRoute(r *discovery.Resource) error {
	rt := &workload.Route{}
	if err := decode(r, workload.RouteType, rt); err != nil {
		return err
	}
	if _, err := Route(rt); err != nil {
		return err
	}
	s.routes[r.GetName()] = rt
	return nil
}

func decode(r *discovery.Resource, typeURL string, m proto.Message) error {
	body := r.GetResource()
	switch {
	case body == nil:
		return errors.New("resource has no body")
	case body.GetTypeUrl() != typeURL:
		return fmt.Errorf("resource of type %s in a %s response", body.GetTypeUrl(), typeURL)
	}
	if err := body.UnmarshalTo(m); err != nil {
		return fmt.Errorf("decode %s: %w", strings.TrimPrefix(typeURL, "type.googleapis.com/"), err)
	}
	return nil
}

// push builds a snapshot from what the store holds and hands it on.
func (s *Store) push() {
	addrs := make([]*workload.Address, 0, len(s.addresses))
	for _, name := range slices.Sorted(maps.Keys(s.addresses)) {
		addrs = append(addrs, s.addresses[name])
	}
	auths := make([]*workload.Authorization, 0, len(s.auths))
	for _, name := range slices.Sorted(maps.Keys(s.auths)) {
		auths = append(auths, s.auths[name])
	}
	routes := make([]model.Route, 0, len(s.routes))
	for _, name := range slices.Sorted(maps.Keys(s.routes)) {
		rt, err := Route(s.routes[name])
		if err != nil {
			continue // checked in applyRoute
		}
		routes = append(routes, rt)
	}
	snap, err := Build(s.gateway, addrs, auths, routes)
	if err != nil {
		s.log.Warn("configuration partly invalid (failing closed where it matters)", "err", err)
	}
	if err := s.to.Update(snap); err != nil {
		s.log.Warn("proxy kept the previous version of invalid routes or policies", "err", err)
	}
	s.log.Info("configuration applied", "services", len(snap.Services), "workloads", len(snap.Workloads), "policies", len(snap.Policies), "routes", len(snap.Routes))
}
