// Package state holds what a ztunnel knows of the mesh: workloads, services
// and authorization policies, as decoded from istiod-lite's xDS resources,
// indexed for the data path (workload by IP, service by VIP, policies of a
// workload). Updates are atomic per call and wake whoever watches Changed.
package state

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/api/workload"
	"github.com/ambit-mesh/ambit/ztunnel/authz"
)

// Port maps a service port to a workload's target port.
type Port struct {
	ServicePort, TargetPort uint16
}

// Waypoint is how to reach the waypoint of a workload or service.
type Waypoint struct {
	// Service names the waypoint's Service ("<namespace>/<hostname>"), or
	// Address is its address when given directly.
	Service string
	Address netip.Addr
	Port    uint16
}

// Workload is one addressable endpoint (a pod). It is immutable.
type Workload struct {
	UID, Name, Namespace string
	Addresses            []netip.Addr
	// HBONE says the workload is captured and accepts HBONE on 15008.
	HBONE    bool
	Identity spiffeid.ID
	Node     string
	Healthy  bool
	Waypoint *Waypoint
	// Services maps "<namespace>/<hostname>" to the ports of the service
	// this workload serves.
	Services map[string][]Port
	// Policies are the selector policies naming this workload.
	Policies []string
	// Telemetry labels.
	CanonicalName, CanonicalRevision, WorkloadName, ServiceAccount string
}

// Service is a Kubernetes Service. It is immutable.
type Service struct {
	Name, Namespace, Hostname string
	VIPs                      []netip.Addr
	Ports                     []Port
	Waypoint                  *Waypoint
}

// Key is the service's name in Workload.Services.
func (s *Service) Key() string { return s.Namespace + "/" + s.Hostname }

// ErrInvalid wraps every reason a resource is refused.
var ErrInvalid = errors.New("invalid resource")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// DecodeAddress checks and converts an Address resource into a Workload or a
// Service (exactly one is non-nil).
func DecodeAddress(a *workload.Address) (*Workload, *Service, error) {
	switch t := a.GetType().(type) {
	case *workload.Address_Workload:
		w, err := decodeWorkload(t.Workload)
		return w, nil, err
	case *workload.Address_Service:
		s, err := decodeService(t.Service)
		return nil, s, err
	}
	return nil, nil, invalid("address is neither a workload nor a service")
}

func decodeWorkload(in *workload.Workload) (*Workload, error) {
	if in.GetUid() == "" || in.GetNamespace() == "" || in.GetName() == "" {
		return nil, invalid("workload %q: uid, name and namespace are required", in.GetUid())
	}
	w := &Workload{
		UID: in.GetUid(), Name: in.GetName(), Namespace: in.GetNamespace(),
		HBONE: in.GetTunnelProtocol() == workload.TunnelProtocol_HBONE, Node: in.GetNode(),
		Healthy: in.GetStatus() == workload.WorkloadStatus_HEALTHY, Policies: slices.Clone(in.GetAuthorizationPolicies()),
		CanonicalName: in.GetCanonicalName(), CanonicalRevision: in.GetCanonicalRevision(),
		WorkloadName: in.GetWorkloadName(), ServiceAccount: in.GetServiceAccount(),
		Services: map[string][]Port{},
	}
	for _, b := range in.GetAddresses() {
		a, ok := netip.AddrFromSlice(b)
		if !ok {
			return nil, invalid("workload %s: address of %d bytes", w.UID, len(b))
		}
		w.Addresses = append(w.Addresses, a.Unmap())
	}
	if in.GetTrustDomain() != "" || in.GetServiceAccount() != "" {
		td, err := spiffeid.TrustDomainFromString(in.GetTrustDomain())
		if err != nil {
			return nil, invalid("workload %s: trust domain: %v", w.UID, err)
		}
		if w.Identity, err = spiffeid.FromSegments(td, "ns", w.Namespace, "sa", in.GetServiceAccount()); err != nil {
			return nil, invalid("workload %s: identity: %v", w.UID, err)
		}
	}
	if w.HBONE && w.Identity.IsZero() {
		return nil, invalid("workload %s: HBONE without an identity", w.UID)
	}
	for key, pl := range in.GetServices() {
		ports, err := decodePorts(pl.GetPorts())
		if err != nil {
			return nil, invalid("workload %s: service %s: %v", w.UID, key, err)
		}
		w.Services[key] = ports
	}
	var err error
	if w.Waypoint, err = decodeWaypoint(in.GetWaypoint()); err != nil {
		return nil, invalid("workload %s: %v", w.UID, err)
	}
	return w, nil
}

func decodeService(in *workload.Service) (*Service, error) {
	if in.GetNamespace() == "" || in.GetHostname() == "" {
		return nil, invalid("service %q: namespace and hostname are required", in.GetName())
	}
	s := &Service{Name: in.GetName(), Namespace: in.GetNamespace(), Hostname: in.GetHostname()}
	for _, na := range in.GetAddresses() {
		a, ok := netip.AddrFromSlice(na.GetAddress())
		if !ok {
			return nil, invalid("service %s: address of %d bytes", s.Key(), len(na.GetAddress()))
		}
		s.VIPs = append(s.VIPs, a.Unmap())
	}
	var err error
	if s.Ports, err = decodePorts(in.GetPorts()); err != nil {
		return nil, invalid("service %s: %v", s.Key(), err)
	}
	if s.Waypoint, err = decodeWaypoint(in.GetWaypoint()); err != nil {
		return nil, invalid("service %s: %v", s.Key(), err)
	}
	return s, nil
}

func decodePorts(in []*workload.Port) ([]Port, error) {
	var out []Port
	for _, p := range in {
		if p.GetServicePort() == 0 || p.GetServicePort() > 65535 || p.GetTargetPort() > 65535 {
			return nil, fmt.Errorf("port %d->%d out of range", p.GetServicePort(), p.GetTargetPort())
		}
		target := p.GetTargetPort()
		if target == 0 {
			target = p.GetServicePort()
		}
		out = append(out, Port{ServicePort: uint16(p.GetServicePort()), TargetPort: uint16(target)})
	}
	return out, nil
}

func decodeWaypoint(g *workload.GatewayAddress) (*Waypoint, error) {
	if g == nil {
		return nil, nil
	}
	port := g.GetHboneMtlsPort()
	if port == 0 {
		port = 15008
	}
	if port > 65535 {
		return nil, fmt.Errorf("waypoint port %d out of range", port)
	}
	wp := &Waypoint{Port: uint16(port)}
	switch d := g.GetDestination().(type) {
	case *workload.GatewayAddress_Hostname:
		wp.Service = d.Hostname.GetNamespace() + "/" + d.Hostname.GetHostname()
	case *workload.GatewayAddress_Address:
		a, ok := netip.AddrFromSlice(d.Address.GetAddress())
		if !ok {
			return nil, fmt.Errorf("waypoint address of %d bytes", len(d.Address.GetAddress()))
		}
		wp.Address = a.Unmap()
	default:
		return nil, errors.New("waypoint without a destination")
	}
	return wp, nil
}

// Tables is the current state, safe for concurrent use.
type Tables struct {
	mu        sync.RWMutex
	workloads map[string]*Workload // by resource name
	services  map[string]*Service  // by resource name
	policies  map[string]*authz.Policy
	byIP      map[netip.Addr]*Workload
	byVIP     map[netip.Addr]*Service
	byKey     map[string]*Service
	byPod     map[string]*Workload // "<namespace>/<name>"
	endpoints map[string][]*Workload
	changed   chan struct{}
	version   uint64
}

// NewTables returns empty tables.
func NewTables() *Tables {
	t := &Tables{
		workloads: map[string]*Workload{}, services: map[string]*Service{},
		policies: map[string]*authz.Policy{}, changed: make(chan struct{}),
	}
	t.reindexLocked()
	return t
}

// Update applies one batch: addresses and policies upserted by resource name,
// then removals. A nil value in addrs or policies removes that name.
func (t *Tables) Update(addrs map[string]*Workload, svcs map[string]*Service, policies map[string]*authz.Policy, removed []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for name, w := range addrs {
		delete(t.services, name)
		t.workloads[name] = w
	}
	for name, s := range svcs {
		delete(t.workloads, name)
		t.services[name] = s
	}
	maps.Copy(t.policies, policies)
	for _, name := range removed {
		delete(t.workloads, name)
		delete(t.services, name)
		delete(t.policies, name)
	}
	t.reindexLocked()
	t.version++
	close(t.changed)
	t.changed = make(chan struct{})
}

// UpsertWorkload adds or replaces one workload under its uid (tests, static config).
func (t *Tables) UpsertWorkload(w *Workload) {
	t.Update(map[string]*Workload{w.UID: w}, nil, nil, nil)
}

// UpsertService adds or replaces one service under its key.
func (t *Tables) UpsertService(s *Service) {
	t.Update(nil, map[string]*Service{s.Key(): s}, nil, nil)
}

// UpsertPolicy adds or replaces one policy under its name.
func (t *Tables) UpsertPolicy(p *authz.Policy) {
	t.Update(nil, nil, map[string]*authz.Policy{p.Name: p}, nil)
}

// Remove removes resources by name.
func (t *Tables) Remove(names ...string) { t.Update(nil, nil, nil, names) }

func (t *Tables) reindexLocked() {
	t.byIP = map[netip.Addr]*Workload{}
	t.byPod = map[string]*Workload{}
	t.endpoints = map[string][]*Workload{}
	for _, name := range slices.Sorted(maps.Keys(t.workloads)) {
		w := t.workloads[name]
		for _, a := range w.Addresses {
			t.byIP[a] = w
		}
		t.byPod[w.Namespace+"/"+w.Name] = w
		for key := range w.Services {
			t.endpoints[key] = append(t.endpoints[key], w)
		}
	}
	t.byVIP = map[netip.Addr]*Service{}
	t.byKey = map[string]*Service{}
	for _, s := range t.services {
		t.byKey[s.Key()] = s
		for _, a := range s.VIPs {
			t.byVIP[a] = s
		}
	}
}

// Changed returns a channel closed at the next update.
func (t *Tables) Changed() <-chan struct{} {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.changed
}

// Version counts updates.
func (t *Tables) Version() uint64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.version
}

// WorkloadByIP returns the workload with address a.
func (t *Tables) WorkloadByIP(a netip.Addr) *Workload {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.byIP[a.Unmap()]
}

// Pod returns the workload of the pod namespace/name.
func (t *Tables) Pod(namespace, name string) *Workload {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.byPod[namespace+"/"+name]
}

// ServiceByVIP returns the service with VIP a.
func (t *Tables) ServiceByVIP(a netip.Addr) *Service {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.byVIP[a.Unmap()]
}

// ServiceByKey returns the service "<namespace>/<hostname>".
func (t *Tables) ServiceByKey(key string) *Service {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.byKey[key]
}

// Endpoints returns the workloads serving the service, with their ports.
func (t *Tables) Endpoints(s *Service) []*Workload {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return slices.Clone(t.endpoints[s.Key()])
}

// Waypoints returns the waypoints that alone may send w mesh traffic: its own
// (traffic addressed to its IP) and those of the services it is an endpoint of.
// DESIGN.md: a destination bound to a waypoint accepts mesh traffic only from it.
func (t *Tables) Waypoints(w *Workload) []*Waypoint {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []*Waypoint
	if w.Waypoint != nil {
		out = append(out, w.Waypoint)
	}
	for _, key := range slices.Sorted(maps.Keys(w.Services)) {
		if s := t.byKey[key]; s != nil && s.Waypoint != nil {
			out = append(out, s.Waypoint)
		}
	}
	return out
}

// PoliciesFor returns the policies that apply to w, in name order.
func (t *Tables) PoliciesFor(w *Workload) []*authz.Policy {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []*authz.Policy
	for _, name := range slices.Sorted(maps.Keys(t.policies)) {
		if p := t.policies[name]; p.AppliesTo(w.Namespace, w.Policies) {
			out = append(out, p)
		}
	}
	return out
}

// Dump is the tables' content for the admin config dump.
type Dump struct {
	Workloads []*Workload
	Services  []*Service
	Policies  []string
	Version   uint64
}

// Dump returns the current content, sorted by name.
func (t *Tables) Dump() Dump {
	t.mu.RLock()
	defer t.mu.RUnlock()
	d := Dump{Version: t.version, Policies: slices.Sorted(maps.Keys(t.policies))}
	for _, n := range slices.Sorted(maps.Keys(t.workloads)) {
		d.Workloads = append(d.Workloads, t.workloads[n])
	}
	for _, n := range slices.Sorted(maps.Keys(t.services)) {
		d.Services = append(d.Services, t.services[n])
	}
	return d
}
