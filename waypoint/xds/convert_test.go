package xds

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/ambit-mesh/ambit/api/workload"
	"github.com/ambit-mesh/ambit/waypoint/authz"
	"github.com/ambit-mesh/ambit/waypoint/model"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var gw = model.Ref{Kind: model.KindGateway, Namespace: "demo", Name: "waypoint"}

func exact(s string) *workload.StringMatch {
	return &workload.StringMatch{MatchType: &workload.StringMatch_Exact{Exact: s}}
}

func addresses() []*workload.Address {
	return []*workload.Address{
		{Type: &workload.Address_Service{Service: &workload.Service{
			Name: "echo", Namespace: "demo", Hostname: "echo.demo.svc.cluster.local",
			Addresses: []*workload.NetworkAddress{{Address: []byte{10, 96, 0, 10}}},
			Ports:     []*workload.Port{{ServicePort: 80, TargetPort: 8080}},
		}}},
		{Type: &workload.Address_Workload{Workload: &workload.Workload{
			Uid: "Kubernetes//Pod/demo/echo-1", Name: "echo-1", Namespace: "demo", ServiceAccount: "echo",
			TrustDomain: "cluster.local", Addresses: [][]byte{{10, 244, 1, 5}}, TunnelProtocol: workload.TunnelProtocol_HBONE,
			Services: map[string]*workload.PortList{"demo/echo.demo.svc.cluster.local": {Ports: []*workload.Port{{ServicePort: 80, TargetPort: 8080}}}},
		}}},
		{Type: &workload.Address_Workload{Workload: &workload.Workload{
			Uid: "Kubernetes//Pod/demo/plain", Name: "plain", Namespace: "demo", ServiceAccount: "plain",
			Addresses: [][]byte{{10, 244, 1, 6}},
		}}},
	}
}

func TestBuildServicesAndWorkloads(t *testing.T) {
	snap, err := Build(gw, addresses(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Services) != 1 || snap.Services[0].Addresses[0] != netip.MustParseAddr("10.96.0.10") || snap.Services[0].Ports[0].TargetPort != 8080 {
		t.Errorf("service: %+v", snap.Services)
	}
	if len(snap.Workloads) != 2 {
		t.Fatalf("workloads: %+v", snap.Workloads)
	}
	w := snap.Workloads[0]
	if w.Services["demo/echo"][80] != 8080 || w.Unhealthy {
		t.Errorf("workload echo-1: %+v", w)
	}
	if !snap.Workloads[1].Unhealthy {
		t.Error("a workload without HBONE must never be sent plaintext")
	}
}

func TestPolicyConvertsAndEvaluates(t *testing.T) {
	a := &workload.Authorization{
		Name: "get-only", Namespace: "demo", Action: workload.Action_ALLOW,
		Targets: []*workload.PolicyTarget{{Kind: "Service", Namespace: "demo", Name: "echo"}},
		Rules: []*workload.Rule{{Clauses: []*workload.Clause{
			{Matches: []*workload.Match{{Namespaces: []*workload.StringMatch{exact("demo")}}}},
			{Matches: []*workload.Match{{
				Methods:        []*workload.StringMatch{exact("GET")},
				NotPaths:       []*workload.StringMatch{exact("/admin/{**}")},
				SourceIps:      []*workload.IPPrefix{{Address: []byte{10, 0, 0, 0}, Length: 8}},
				RequestHeaders: []*workload.HeaderMatch{{Name: "x-env", Values: []*workload.StringMatch{{MatchType: &workload.StringMatch_Prefix{Prefix: "prod"}}}}},
			}}},
		}}},
	}
	snap, err := Build(gw, nil, []*workload.Authorization{a}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := snap.Policies[0]
	if p.Targets[0] != (model.Ref{Kind: "Service", Namespace: "demo", Name: "echo"}) {
		t.Errorf("targets %+v", p.Targets)
	}
	set, err := authz.NewSet([]authz.Policy{p.Policy})
	if err != nil {
		t.Fatal(err)
	}
	req := func(method, path string) *authz.Request {
		return &authz.Request{
			Peer: spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/client"), SourceIP: netip.MustParseAddr("10.1.2.3"),
			HTTP: true, Method: method, Path: path, Header: http.Header{"X-Env": {"production"}},
		}
	}
	for _, tt := range []struct {
		method, path string
		allow        bool
	}{{"GET", "/x", true}, {"POST", "/x", false}, {"GET", "/admin/a/b", false}} {
		if d := set.Evaluate(req(tt.method, tt.path)); d.Allow != tt.allow {
			t.Errorf("%s %s: allow %v, want %v", tt.method, tt.path, d.Allow, tt.allow)
		}
	}
}

func TestBadPolicyFailsClosed(t *testing.T) {
	bad := []*workload.Authorization{
		{Name: "unknown-matcher", Namespace: "demo", Action: workload.Action_ALLOW, Rules: []*workload.Rule{{Clauses: []*workload.Clause{
			{Matches: []*workload.Match{{Principals: []*workload.StringMatch{{}}}}},
		}}}},
		{Name: "bad-ip", Namespace: "demo", Action: workload.Action_DENY, Rules: []*workload.Rule{{Clauses: []*workload.Clause{
			{Matches: []*workload.Match{{SourceIps: []*workload.IPPrefix{{Address: []byte{1, 2, 3}, Length: 8}}}}},
		}}}},
		{Name: "bad-action", Namespace: "demo", Action: 7},
	}
	snap, err := Build(gw, nil, bad, nil)
	if err == nil || !strings.Contains(err.Error(), "demo/unknown-matcher") || !strings.Contains(err.Error(), "demo/bad-ip") {
		t.Fatalf("errors: %v", err)
	}
	if len(snap.Policies) != 3 {
		t.Fatalf("policies %d, want all three kept in fail-closed form", len(snap.Policies))
	}
	allowNothing := snap.Policies[0]
	if allowNothing.Action != authz.Allow || len(allowNothing.Rules) != 0 {
		t.Errorf("bad ALLOW: %+v, want an ALLOW matching nothing", allowNothing)
	}
	for _, p := range snap.Policies[1:] {
		if p.Action != authz.Deny || len(p.Rules) != 1 || len(p.Rules[0].Clauses) != 0 {
			t.Errorf("bad %s: %+v, want a DENY matching everything", p.Name, p)
		}
	}
}
