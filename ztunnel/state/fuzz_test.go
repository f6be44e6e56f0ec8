package state

import (
	"errors"
	"net/netip"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/ambit-mesh/ambit/api/workload"
	"github.com/ambit-mesh/ambit/ztunnel/authz"
)

var fuzzKeepIP = netip.MustParseAddr("10.9.9.9")

// fuzzSeeds are resources as istiod-lite sends them: a meshed workload with
// a service and a waypoint, a service with a VIP and a waypoint hostname,
// and an authorization with every kind of match.
func fuzzSeeds() map[string]proto.Message {
	str := func(s string) []*workload.StringMatch {
		return []*workload.StringMatch{{MatchType: &workload.StringMatch_Exact{Exact: s}}, {MatchType: &workload.StringMatch_Prefix{Prefix: s}}}
	}
	return map[string]proto.Message{
		"keep": &workload.Address{Type: &workload.Address_Workload{Workload: &workload.Workload{
			Uid: "keep", Name: "keep", Namespace: "ns", Addresses: [][]byte{fuzzKeepIP.AsSlice()},
			TunnelProtocol: workload.TunnelProtocol_HBONE, TrustDomain: "cluster.local", ServiceAccount: "sa",
			Status: workload.WorkloadStatus_HEALTHY, AuthorizationPolicies: []string{"ns/allow"},
			Services: map[string]*workload.PortList{"ns/echo.ns.svc.cluster.local": {Ports: []*workload.Port{{ServicePort: 80, TargetPort: 8080}}}},
			Waypoint: &workload.GatewayAddress{Destination: &workload.GatewayAddress_Address{Address: &workload.NetworkAddress{Address: []byte{10, 9, 9, 10}}}, HboneMtlsPort: 15008},
		}}},
		"ns/echo.ns.svc.cluster.local": &workload.Address{Type: &workload.Address_Service{Service: &workload.Service{
			Name: "echo", Namespace: "ns", Hostname: "echo.ns.svc.cluster.local",
			Addresses: []*workload.NetworkAddress{{Address: []byte{10, 96, 0, 1}}},
			Ports:     []*workload.Port{{ServicePort: 80, TargetPort: 8080}},
			Waypoint:  &workload.GatewayAddress{Destination: &workload.GatewayAddress_Hostname{Hostname: &workload.NamespacedHostname{Namespace: "ns", Hostname: "wp.ns.svc.cluster.local"}}},
		}}},
		"ns/allow": &workload.Authorization{Name: "allow", Namespace: "ns", Scope: workload.Scope_WORKLOAD_SELECTOR,
			Rules: []*workload.Rule{{Clauses: []*workload.Clause{{Matches: []*workload.Match{{
				Principals: str("cluster.local/ns/other/sa/client"), NotPrincipals: str("cluster.local/ns/other/sa/bad"),
				Namespaces: str("other"), NotNamespaces: str("bad"),
				SourceIps: []*workload.IPPrefix{{Address: []byte{10, 0, 0, 0}, Length: 8}}, NotSourceIps: []*workload.IPPrefix{{Address: []byte{10, 1, 0, 0}, Length: 16}},
				DestinationIps:   []*workload.IPPrefix{{Address: fuzzKeepIP.AsSlice(), Length: 32}},
				DestinationPorts: []uint32{8080}, NotDestinationPorts: []uint32{9090},
			}}}}}}},
	}
}

func typeOf(m proto.Message) uint8 {
	if _, ok := m.(*workload.Authorization); ok {
		return 1
	}
	return 0
}

// FuzzApply feeds arbitrary resource bytes, under arbitrary names, to the
// xDS handler of ztunnel's state, after a good workload "keep" is in. It
// must never panic; every refusal must wrap ErrInvalid and name a resource
// of the response; a refused resource must leave the previous version in
// place; what is accepted must be usable by the lookups and policy
// evaluation the proxy does.
func FuzzApply(f *testing.F) {
	for name, m := range fuzzSeeds() {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(typeOf(m), name, b)
		f.Add(typeOf(m), name, b[:len(b)/2])
	}
	f.Add(uint8(0), "", []byte{})
	f.Add(uint8(1), "ns/x", []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	keep, err := anypb.New(fuzzSeeds()["keep"])
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, kind uint8, name string, value []byte) {
		typeURL := workload.AddressType
		if kind%2 == 1 {
			typeURL = workload.AuthorizationType
		}
		tables := NewTables()
		if rej := tables.Apply(workload.AddressType, []*discovery.Resource{{Name: "keep", Version: "1", Resource: keep}}, nil); rej != nil {
			t.Fatalf("seed workload rejected: %v", rej)
		}
		res := []*discovery.Resource{{Name: name, Version: "2", Resource: &anypb.Any{TypeUrl: typeURL, Value: value}}}
		rejected := tables.Apply(typeURL, res, nil)
		for n, err := range rejected {
			if n != name && n != "(unnamed)" {
				t.Fatalf("rejected %q, not in the response", n)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("refusal of %q does not wrap ErrInvalid: %v", n, err)
			}
		}
		kept := tables.WorkloadByIP(fuzzKeepIP)
		// Only an accepted Address may replace keep or claim its IP.
		if (rejected[name] != nil || typeURL == workload.AuthorizationType) && (kept == nil || kept.UID != "keep") {
			t.Fatalf("workload keep lost after %v", rejected)
		}
		// What the proxy does with the state must not fail either.
		for _, w := range []*Workload{kept, tables.Pod("ns", "keep")} {
			if w == nil {
				continue
			}
			pols := tables.PoliciesFor(w)
			_ = tables.Waypoints(w)
			for _, peer := range []spiffeid.ID{{}, spiffeid.RequireFromString("spiffe://cluster.local/ns/other/sa/client")} {
				authz.Evaluate(pols, authz.Conn{Peer: peer, Src: netip.MustParseAddr("10.0.0.1"), Dst: fuzzKeepIP, DstPort: 8080})
			}
			for key := range w.Services {
				if s := tables.ServiceByKey(key); s != nil {
					_ = tables.Endpoints(s)
				}
			}
		}
		_ = tables.ServiceByVIP(netip.MustParseAddr("10.96.0.1"))
		_ = tables.Dump()
		// A repeat is refused or applied the same way.
		again := tables.Apply(typeURL, res, nil)
		if len(again) != len(rejected) {
			t.Fatalf("same response: %d refusals, then %d", len(rejected), len(again))
		}
	})
}
