package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/ambit-mesh/ambit/waypoint/authz"
	"github.com/ambit-mesh/ambit/waypoint/lb"
	"github.com/ambit-mesh/ambit/waypoint/model"
	"github.com/ambit-mesh/ambit/waypoint/route"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// state is a compiled Snapshot: everything a request looks up, immutable
// once stored (the pools inside are shared across states and safe for
// concurrent use).
type state struct {
	snap *model.Snapshot
	// services by VIP:port; workloads by IP (any port).
	services  map[netip.AddrPort]*destination
	workloads map[netip.Addr]*destination
	backends  map[string]*backend          // model.ServiceKey
	endpoints map[netip.AddrPort]*endpoint // by workload address, for dialing
	byIP      map[netip.Addr]*model.Workload
	// good are the last valid versions of routes and policies by key, so an
	// invalid update keeps the old routing and policy.
	goodRoutes   map[string]model.Route
	goodPolicies map[string]model.Policy
}

func emptyState() *state {
	return &state{
		snap:      &model.Snapshot{},
		services:  map[netip.AddrPort]*destination{},
		workloads: map[netip.Addr]*destination{},
		backends:  map[string]*backend{},
		endpoints: map[netip.AddrPort]*endpoint{},
		byIP:      map[netip.Addr]*model.Workload{},
	}
}

// destination is where a tunnel's :authority points.
type destination struct {
	name     string // for logs and telemetry
	service  *model.Service
	port     model.Port
	routes   *route.Table // nil: everything goes to the service itself
	fallback route.Rule   // the default route when routes is nil
	policies *authz.Set
	// workload is set for a workload-addressed destination.
	workload *endpoint
}

// backend is a service port requests are balanced over.
type backend struct {
	key     string
	service *model.Service
	port    model.Port
	pool    *lb.Pool[*endpoint]
	load    *load // shared by the states that have this pool
}

// load counts a backend's requests and retries in flight, for the retry
// budget.
type load struct {
	active, retrying atomic.Int64
}

// endpoint is one workload address a backend sends to.
type endpoint struct {
	addr     netip.AddrPort // pod IP:target port (the HBONE :authority)
	hbone    netip.AddrPort // where its ztunnel accepts HBONE
	identity spiffeid.ID
	workload *model.Workload
}

// lookup finds the destination of a tunnel target.
func (s *state) lookup(target netip.AddrPort) *destination {
	if d := s.services[target]; d != nil {
		return d
	}
	if w := s.workloads[target.Addr()]; w != nil {
		d := *w
		ep := *w.workload
		ep.addr = target
		d.workload = &ep
		return &d
	}
	return nil
}

// Update compiles snap and makes it the configuration of new requests.
// Invalid routes and policies keep their previous valid version (or, for a
// policy never valid, fail closed: an ALLOW matching nothing, a DENY
// matching everything); the returned error names each, for status
// conditions. Everything else in snap takes effect.
func (p *Proxy) Update(snap *model.Snapshot) error {
	p.updateMu.Lock()
	defer p.updateMu.Unlock()
	prev := p.state.Load()
	s, err := compile(snap, prev)
	p.state.Store(s)
	return err
}

func compile(snap *model.Snapshot, prev *state) (*state, error) {
	s := emptyState()
	s.snap = snap
	var errs []error

	s.goodRoutes = map[string]model.Route{}
	routes := make([]model.Route, 0, len(snap.Routes))
	for _, r := range snap.Routes {
		key := r.Kind.String() + "/" + r.Key()
		if err := route.Validate(&r.Route); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", r.Kind, r.Key(), err))
			old, ok := prev.goodRoutes[key]
			if !ok {
				continue
			}
			r = old
		}
		s.goodRoutes[key] = r
		routes = append(routes, r)
	}
	s.goodPolicies = map[string]model.Policy{}
	policies := make([]model.Policy, 0, len(snap.Policies))
	for _, pol := range snap.Policies {
		key := pol.Key()
		if err := pol.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("authorization policy %s: %w", key, err))
			old, ok := prev.goodPolicies[key]
			if !ok {
				pol = pol.FailClosed()
			} else {
				pol = old
			}
		} else {
			s.goodPolicies[key] = pol
		}
		policies = append(policies, pol)
	}

	// Endpoints of every service port, from the workloads.
	for i := range snap.Workloads {
		w := &snap.Workloads[i]
		for _, a := range w.Addresses {
			s.byIP[a] = w
		}
	}
	for i := range snap.Services {
		svc := &snap.Services[i]
		for _, port := range svc.Ports {
			b, err := buildBackend(svc, port, snap.Workloads, prev)
			if err != nil {
				errs = append(errs, err)
			}
			s.backends[b.key] = b
		}
	}
	for _, b := range s.backends {
		for _, ep := range b.pool.Values() {
			s.endpoints[ep.addr] = ep
		}
	}

	gwPolicies := policiesFor(policies, snap.Gateway, model.Ref{})
	gwSet, err := authz.NewSet(gwPolicies)
	if err != nil {
		errs = append(errs, err) // unreachable: validated above
	}
	for i := range snap.Services {
		svc := &snap.Services[i]
		ref := model.Ref{Kind: model.KindService, Namespace: svc.Namespace, Name: svc.Name}
		set, err := authz.NewSet(policiesFor(policies, snap.Gateway, ref))
		if err != nil {
			errs = append(errs, err)
		}
		for _, port := range svc.Ports {
			d := &destination{
				name:     svc.Hostname + ":" + strconv.Itoa(int(port.Port)),
				service:  svc,
				port:     port,
				policies: set,
				fallback: route.Rule{Backends: []route.Backend{{Namespace: svc.Namespace, Name: svc.Name, Port: port.Port, Weight: 1}}},
			}
			if rs := routesFor(routes, snap.Gateway, svc, port.Port); len(rs) > 0 {
				d.routes, _ = route.Compile(rs) // validated above
			}
			for _, a := range svc.Addresses {
				s.services[netip.AddrPortFrom(a, port.Port)] = d
			}
		}
	}
	for i := range snap.Workloads {
		w := &snap.Workloads[i]
		id, err := w.Identity()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, a := range w.Addresses {
			s.workloads[a] = &destination{
				name:     w.Namespace + "/" + w.Name,
				policies: gwSet,
				workload: &endpoint{hbone: w.HBONEAddr(a), identity: id, workload: w},
			}
		}
	}
	return s, errors.Join(errs...)
}

// buildBackend makes the pool of one service port, reusing the previous
// pool (and so its load and outlier state) when there was one.
func buildBackend(svc *model.Service, port model.Port, workloads []model.Workload, prev *state) (*backend, error) {
	key := model.ServiceKey(svc.Namespace, svc.Name, port.Port)
	b := &backend{key: key, service: svc, port: port}
	if old := prev.backends[key]; old != nil && old.service.LoadBalancing == svc.LoadBalancing && old.service.Outlier == svc.Outlier {
		b.pool, b.load = old.pool, old.load
	} else {
		b.pool = lb.New[*endpoint](svc.LoadBalancing, svc.Outlier, nil)
		b.load = &load{}
	}
	var (
		keys []string
		eps  []*endpoint
		errs []error
	)
	for i := range workloads {
		w := &workloads[i]
		ports, ok := w.Services[svc.Key()]
		if !ok || w.Unhealthy {
			continue
		}
		target, ok := ports[port.Port]
		if !ok {
			target = port.TargetPort
		}
		if target == 0 {
			target = port.Port
		}
		id, err := w.Identity()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, a := range w.Addresses {
			ep := &endpoint{addr: netip.AddrPortFrom(a, target), hbone: w.HBONEAddr(a), identity: id, workload: w}
			keys = append(keys, ep.addr.String())
			eps = append(eps, ep)
		}
	}
	b.pool.Update(keys, eps)
	return b, errors.Join(errs...)
}

// policiesFor returns the policies that apply to a service (svc set) or to
// everything the gateway serves (svc zero).
func policiesFor(all []model.Policy, gw, svc model.Ref) []authz.Policy {
	var out []authz.Policy
	for _, p := range all {
		if slices.ContainsFunc(p.Targets, func(t model.Ref) bool {
			return t.Kind == model.KindGateway && t.Key() == gw.Key() ||
				svc.Name != "" && t.Kind == model.KindService && t.Key() == svc.Key()
		}) {
			out = append(out, p.Policy)
		}
	}
	return out
}

// routesFor returns the routes of a service port: those attached to the
// Service (GAMMA) if any, else those attached to the waypoint's Gateway.
func routesFor(all []model.Route, gw model.Ref, svc *model.Service, port uint16) []route.Route {
	var mine, gateway []route.Route
	for _, r := range all {
		switch {
		case slices.ContainsFunc(r.Parents, func(pr model.Ref) bool {
			return pr.Kind == model.KindService && pr.Namespace == svc.Namespace && pr.Name == svc.Name &&
				(pr.Port == 0 || pr.Port == port)
		}):
			mine = append(mine, r.Route)
		case slices.ContainsFunc(r.Parents, func(pr model.Ref) bool {
			return pr.Kind == model.KindGateway && pr.Key() == gw.Key() && (pr.Port == 0 || pr.Port == port)
		}):
			gateway = append(gateway, r.Route)
		}
	}
	if len(mine) > 0 {
		return mine
	}
	return gateway
}
