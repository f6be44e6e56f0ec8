// Package model is the waypoint's configuration as one immutable value, a
// [Snapshot]: the services bound to the waypoint, their endpoints, and the
// routes and policies attached to them. The xDS client (or a static file)
// builds Snapshots; the proxy swaps them in atomically, so a request always
// sees one consistent configuration.
package model

import (
	"fmt"
	"net/netip"
	"strconv"

	"github.com/ambit-mesh/ambit/waypoint/authz"
	"github.com/ambit-mesh/ambit/waypoint/lb"
	"github.com/ambit-mesh/ambit/waypoint/route"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultHBONEPort is where workloads (their ztunnel) accept HBONE.
const DefaultHBONEPort = 15008

// Snapshot is the whole configuration of a waypoint.
type Snapshot struct {
	// Gateway is the waypoint's own Gateway; routes and policies whose
	// parent or target it is apply to everything it serves.
	Gateway Ref
	// Services are the services bound to this waypoint (traffic to their
	// addresses arrives here) and the services routes send to.
	Services []Service
	// Workloads are the endpoints of Services, and workloads bound to the
	// waypoint directly (traffic to their addresses arrives here too).
	Workloads []Workload
	// Routes are the HTTPRoutes and GRPCRoutes attached to the Gateway or
	// to Services (GAMMA).
	Routes []Route
	// Policies are the AuthorizationPolicies targeting the Gateway or
	// Services.
	Policies []Policy
}

// Kind of a Ref.
const (
	KindGateway = "Gateway"
	KindService = "Service"
)

// Ref names a Gateway or Service: a route parentRef or policy targetRef.
type Ref struct {
	Kind, Namespace, Name string
	// Port, for a route's Service parent, restricts it to one port; 0 all.
	Port uint16
}

// Key returns "namespace/name".
func (r Ref) Key() string { return r.Namespace + "/" + r.Name }

// Protocol of a service port, from appProtocol or the port name.
type Protocol uint8

// Protocols. Detect sniffs the first bytes; TCP never parses.
const (
	Detect Protocol = iota
	HTTP            // HTTP/1.1 or h2c from the client, HTTP/1.1 upstream unless h2
	HTTP2           // h2c / gRPC upstream
	TCP
)

// Service is a Kubernetes Service.
type Service struct {
	Namespace, Name string
	// Hostname is the FQDN (name.namespace.svc.cluster.local).
	Hostname  string
	Addresses []netip.Addr
	Ports     []Port
	// LoadBalancing and Outlier configure the endpoint pools.
	LoadBalancing lb.Policy
	Outlier       lb.Outlier
}

// Key returns "namespace/name".
func (s *Service) Key() string { return s.Namespace + "/" + s.Name }

// Port is a service port.
type Port struct {
	Port uint16
	// TargetPort is the workload port when the workload's own mapping does
	// not say; 0 means the same as Port.
	TargetPort uint16
	Protocol   Protocol
}

// Workload is a pod (or other workload) of the mesh.
type Workload struct {
	UID               string
	Namespace, Name   string
	WorkloadName      string // owner (Deployment) name, for telemetry
	CanonicalService  string
	CanonicalRevision string
	ServiceAccount    string
	TrustDomain       string // default cluster.local
	Addresses         []netip.Addr
	HBONEPort         uint16 // default DefaultHBONEPort
	Unhealthy         bool
	// Services maps "namespace/name" of each service the workload backs to
	// its ports: service port -> target port.
	Services map[string]map[uint16]uint16
}

// Identity returns the workload's SPIFFE identity.
func (w *Workload) Identity() (spiffeid.ID, error) {
	td := w.TrustDomain
	if td == "" {
		td = "cluster.local"
	}
	trust, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity of workload %s/%s: %w", w.Namespace, w.Name, err)
	}
	id, err := spiffeid.FromSegments(trust, "ns", w.Namespace, "sa", w.ServiceAccount)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity of workload %s/%s: %w", w.Namespace, w.Name, err)
	}
	return id, nil
}

// HBONEAddr returns where the workload accepts HBONE on address a.
func (w *Workload) HBONEAddr(a netip.Addr) netip.AddrPort {
	p := w.HBONEPort
	if p == 0 {
		p = DefaultHBONEPort
	}
	return netip.AddrPortFrom(a, p)
}

// Route is a route and where it is attached.
type Route struct {
	Parents []Ref
	route.Route
}

// Policy is an authorization policy and what it targets.
type Policy struct {
	Targets []Ref
	authz.Policy
}

// ServiceKey returns "namespace/name:port", the key of a service port.
func ServiceKey(namespace, name string, port uint16) string {
	return namespace + "/" + name + ":" + strconv.Itoa(int(port))
}

// FailClosed returns the stand-in for p when p is invalid and no valid
// version of it is known: an ALLOW that matches nothing (it still applies,
// so it denies what no other ALLOW allows), a DENY that matches
// everything.
func (p Policy) FailClosed() Policy {
	out := Policy{Targets: p.Targets}
	out.Namespace, out.Name, out.DryRun = p.Namespace, p.Name, p.DryRun
	if p.Action == authz.Allow {
		return out
	}
	out.Action = authz.Deny
	out.Rules = []authz.Rule{{}}
	return out
}
