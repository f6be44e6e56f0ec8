package model

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/ambit-mesh/ambit/api/mesh"
	"github.com/ambit-mesh/ambit/api/workload"
)

// Resources is what one subscriber is sent: resources by type URL, then by name.
type Resources map[string]map[string]*Resource

// Resource is one xDS resource with its version, a hash of its content: two
// resources with the same version are the same, so only changes are pushed.
type Resource struct {
	Name    string
	Message proto.Message
	// Any is Message encoded once, shared by every subscriber it is sent to.
	Any     *anypb.Any
	Version string
}

// NewResource wraps a message, encoding it and computing its version.
func NewResource(name string, msg proto.Message) *Resource {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		// Only invalid UTF-8 in a string field fails; never drop a resource for it.
		b = nil
	}
	sum := sha256.Sum256(b)
	return &Resource{
		Name:    name,
		Message: msg,
		Any:     &anypb.Any{TypeUrl: "type.googleapis.com/" + string(msg.ProtoReflect().Descriptor().FullName()), Value: b},
		Version: hex.EncodeToString(sum[:8]),
	}
}

// resources are the translated resources of a model, computed once per Build and
// shared by every subscriber's view.
type resources struct {
	workloadLocal  map[string]*Resource // with policy names, for the workload's own node
	workloadRemote map[string]*Resource // without
	services       map[string]*Resource
	ztunnelAuthz   map[string]*Resource
	waypointAuthz  map[string]*Resource
	routes         map[string]*Resource
	// nodeBase is the part of every ztunnel's Address view that does not depend on
	// its node: every service and every workload reachable through the mesh (remote
	// variant). byNode lists each node's workloads.
	nodeBase map[string]*Resource
	byNode   map[string][]*Workload
}

func (m *Model) translate() {
	r := resources{
		workloadLocal:  make(map[string]*Resource, len(m.Workloads)),
		workloadRemote: make(map[string]*Resource, len(m.Workloads)),
		services:       make(map[string]*Resource, len(m.Services)),
		ztunnelAuthz:   map[string]*Resource{},
		waypointAuthz:  map[string]*Resource{},
		routes:         make(map[string]*Resource, len(m.routeProtos)),
		nodeBase:       make(map[string]*Resource, len(m.Workloads)+len(m.Services)),
		byNode:         map[string][]*Workload{},
	}
	for uid, w := range m.Workloads {
		r.workloadRemote[uid] = NewResource(uid, w.Proto(false))
		if len(w.Policies) == 0 {
			r.workloadLocal[uid] = r.workloadRemote[uid]
		} else {
			r.workloadLocal[uid] = NewResource(uid, w.Proto(true))
		}
	}
	for key, s := range m.Services {
		r.services[key] = NewResource(key, s.Proto())
		r.nodeBase[key] = r.services[key]
	}
	for uid, w := range m.Workloads {
		r.byNode[w.Node] = append(r.byNode[w.Node], w)
		if w.HBONE || w.Waypoint != nil || len(w.Services) > 0 {
			r.nodeBase[uid] = r.workloadRemote[uid]
		}
	}
	for name, p := range m.Policies {
		if p.Ztunnel != nil {
			r.ztunnelAuthz[name] = NewResource(name, p.Ztunnel)
		}
		if p.Waypoint != nil {
			r.waypointAuthz[name] = NewResource(name, p.Waypoint)
		}
	}
	for name, rt := range m.routeProtos {
		r.routes[name] = NewResource(name, rt)
	}
	m.res = r
}

// Proto translates a workload into its Address resource. withPolicies includes the
// names of the policies selecting it, which only the ztunnel of its node (which
// enforces inbound policy) needs.
func (w *Workload) Proto(withPolicies bool) *workload.Address {
	pw := &workload.Workload{
		Uid:               w.UID,
		Name:              w.Name,
		Namespace:         w.Namespace,
		TrustDomain:       w.Identity.TrustDomain().Name(),
		ServiceAccount:    w.ServiceAccount,
		Node:              w.Node,
		CanonicalName:     w.CanonicalName,
		CanonicalRevision: w.CanonicalRevision,
		WorkloadName:      w.WorkloadName,
		WorkloadType:      workloadType(w.WorkloadKind),
		ClusterId:         clusterOf(w.UID),
		Waypoint:          w.Waypoint.proto(),
	}
	for _, ip := range w.IPs {
		pw.Addresses = append(pw.Addresses, ip.AsSlice())
	}
	if w.HBONE {
		pw.TunnelProtocol = workload.TunnelProtocol_HBONE
	}
	if !w.Healthy {
		pw.Status = workload.WorkloadStatus_UNHEALTHY
	}
	if len(w.Services) > 0 {
		pw.Services = map[string]*workload.PortList{}
		for key, pms := range w.Services {
			pl := &workload.PortList{}
			for _, pm := range pms {
				pl.Ports = append(pl.Ports, &workload.Port{ServicePort: pm.ServicePort, TargetPort: pm.TargetPort})
			}
			pw.Services[key] = pl
		}
	}
	if withPolicies {
		pw.AuthorizationPolicies = slices.Clone(w.Policies)
	}
	return &workload.Address{Type: &workload.Address_Workload{Workload: pw}}
}

func clusterOf(uid string) string {
	for i := 0; i+1 < len(uid); i++ {
		if uid[i] == '/' && uid[i+1] == '/' {
			return uid[:i]
		}
	}
	return ""
}

func workloadType(kind string) workload.WorkloadType {
	switch kind {
	case "Deployment":
		return workload.WorkloadType_DEPLOYMENT
	case "Job":
		return workload.WorkloadType_JOB
	}
	return workload.WorkloadType_POD
}

// Proto translates a service into its Address resource.
func (s *Service) Proto() *workload.Address {
	ps := &workload.Service{
		Name:      s.Ref.Name,
		Namespace: s.Ref.Namespace,
		Hostname:  s.Hostname,
		Waypoint:  s.Waypoint.proto(),
	}
	for _, vip := range s.VIPs {
		ps.Addresses = append(ps.Addresses, &workload.NetworkAddress{Address: vip.AsSlice()})
	}
	for _, p := range s.Ports {
		if p.Protocol != "" && p.Protocol != "TCP" {
			continue
		}
		tp := uint32(0)
		if p.TargetPort.IntVal != 0 {
			tp = uint32(p.TargetPort.IntVal)
		}
		ps.Ports = append(ps.Ports, &workload.Port{ServicePort: uint32(p.Port), TargetPort: tp})
	}
	return &workload.Address{Type: &workload.Address_Service{Service: ps}}
}

func (w *Waypoint) proto() *workload.GatewayAddress {
	if w == nil {
		return nil
	}
	return &workload.GatewayAddress{
		Destination: &workload.GatewayAddress_Hostname{Hostname: &workload.NamespacedHostname{
			Namespace: w.Ref.Namespace, Hostname: w.Hostname,
		}},
		HboneMtlsPort: mesh.PortHBONE,
	}
}

// ForNode is what the ztunnel of a node receives. Addresses: every service (any pod
// may call any of them), the node's own workloads with their policies, and the
// other workloads a client may reach through the mesh (meshed, behind a waypoint or
// a service endpoint) without their policy lists, so a policy change reaches only the
// nodes that enforce it. Authorizations: mesh-wide ones, those of namespaces with a
// workload on the node, and those selecting one of its workloads.
func (m *Model) ForNode(node string) Resources {
	addrs := maps.Clone(m.res.nodeBase)
	auths := map[string]*Resource{}
	localNS := map[string]bool{}
	wanted := map[string]bool{}
	for _, w := range m.res.byNode[node] {
		localNS[w.Namespace] = true
		for _, p := range w.Policies {
			wanted[p] = true
		}
		addrs[w.UID] = m.res.workloadLocal[w.UID]
	}
	for name, p := range m.Policies {
		if p.Ztunnel == nil {
			continue
		}
		switch p.Ztunnel.Scope {
		case workload.Scope_GLOBAL:
		case workload.Scope_NAMESPACE:
			if !localNS[p.Ref.Namespace] {
				continue
			}
		default:
			if !wanted[name] {
				continue
			}
		}
		auths[name] = m.res.ztunnelAuthz[name]
	}
	return Resources{workload.AddressType: addrs, workload.AuthorizationType: auths}
}

// ForWaypoint is what a waypoint receives: the services and workloads bound to it,
// the workloads behind those services (it forwards to them), its own service, the
// targetRefs policies attached to it or to a service bound to it, and the routes
// whose parent is it or a service bound to it.
func (m *Model) ForWaypoint(ref Ref) Resources {
	addrs := map[string]*Resource{}
	auths := map[string]*Resource{}
	routes := map[string]*Resource{}
	wp := m.Waypoints[ref]
	if wp == nil {
		return Resources{workload.AddressType: addrs, workload.AuthorizationType: auths, workload.RouteType: routes}
	}
	bound := map[Ref]bool{}
	for _, s := range m.Services {
		if s.Waypoint == wp || s.Hostname == wp.Hostname {
			addrs[s.Key] = m.res.services[s.Key]
			bound[s.Ref] = true
			for _, uid := range s.Endpoints {
				addrs[uid] = m.res.workloadRemote[uid]
			}
		}
	}
	for uid, w := range m.Workloads {
		if w.Waypoint == wp {
			addrs[uid] = m.res.workloadRemote[uid]
		}
	}
	for name, p := range m.Policies {
		if p.Waypoint == nil {
			continue
		}
		for _, t := range p.Waypoint.Targets {
			r := Ref{Namespace: t.Namespace, Name: t.Name}
			if t.Kind == "Gateway" && r == ref || t.Kind == "Service" && bound[r] {
				auths[name] = m.res.waypointAuthz[name]
				break
			}
		}
	}
	for name, rt := range m.routeProtos {
		for _, p := range rt.GetParents() {
			r := Ref{Namespace: p.GetNamespace(), Name: p.GetName()}
			if p.GetKind() == "Gateway" && r == ref || p.GetKind() == "Service" && bound[r] {
				routes[name] = m.res.routes[name]
				m.addRouteBackends(addrs, rt)
				break
			}
		}
	}
	return Resources{workload.AddressType: addrs, workload.AuthorizationType: auths, workload.RouteType: routes}
}

// addRouteBackends adds the Services a route sends to (backends and mirrors that
// resolve) and their endpoints, which the waypoint balances over.
func (m *Model) addRouteBackends(addrs map[string]*Resource, rt *workload.Route) {
	add := func(b *workload.RouteBackend) {
		if b.GetUnresolved() != "" {
			return
		}
		key := b.GetNamespace() + "/" + b.GetName() + "." + b.GetNamespace() + ".svc." + m.DomainSuffix
		s := m.Services[key]
		if s == nil || addrs[key] != nil {
			return
		}
		addrs[key] = m.res.services[key]
		for _, uid := range s.Endpoints {
			addrs[uid] = m.res.workloadRemote[uid]
		}
	}
	for _, r := range rt.GetRules() {
		for _, b := range r.GetBackends() {
			add(b)
		}
		for _, mr := range r.GetFilters().GetMirrors() {
			add(mr.GetBackend())
		}
	}
}
