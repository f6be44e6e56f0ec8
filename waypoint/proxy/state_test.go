package proxy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/ambit-mesh/ambit/waypoint/authz"
	"github.com/ambit-mesh/ambit/waypoint/model"
	"github.com/ambit-mesh/ambit/waypoint/route"
)

func snapshot(routePath string, policyPath string) *model.Snapshot {
	svc := model.Service{Namespace: "demo", Name: "echo", Hostname: "echo.demo.svc.cluster.local",
		Addresses: []netip.Addr{netip.MustParseAddr("10.96.0.1")}, Ports: []model.Port{{Port: 80}}}
	parent := []model.Ref{{Kind: model.KindService, Namespace: "demo", Name: "echo"}}
	target := []model.Ref{{Kind: model.KindService, Namespace: "demo", Name: "echo"}}
	return &model.Snapshot{
		Services: []model.Service{svc},
		Workloads: []model.Workload{{Namespace: "demo", Name: "echo-1", ServiceAccount: "echo",
			Addresses: []netip.Addr{netip.MustParseAddr("10.1.0.1")}, Services: map[string]map[uint16]uint16{"demo/echo": {80: 8080}}}},
		Routes: []model.Route{{Parents: parent, Route: route.Route{Namespace: "demo", Name: "r", Rules: []route.Rule{{
			Matches:  []route.Match{{Path: route.PathMatch{Type: route.PathRegex, Value: routePath}}},
			Backends: []route.Backend{{Namespace: "demo", Name: "echo", Port: 80, Weight: 1}},
		}}}}},
		Policies: []model.Policy{{Targets: target, Policy: authz.Policy{Namespace: "demo", Name: "p", Action: authz.Deny, Rules: []authz.Rule{{
			Clauses: []authz.Clause{{Matches: []authz.Match{{Paths: []authz.StringMatch{{Type: authz.Template, Value: policyPath}}}}}},
		}}}}},
	}
}

func TestCompileKeepsLastValidRouteAndPolicy(t *testing.T) {
	s1, err := compile(snapshot("/ok/.*", "/deny/{*}"), emptyState())
	if err != nil {
		t.Fatal(err)
	}
	s2, err := compile(snapshot("(", "/deny/{**}/x"), s1)
	if err == nil || !strings.Contains(err.Error(), "HTTPRoute demo/r") || !strings.Contains(err.Error(), "policy demo/p") {
		t.Fatalf("want errors naming the route and the policy, got %v", err)
	}
	d := s2.lookup(netip.MustParseAddrPort("10.96.0.1:80"))
	if d == nil {
		t.Fatal("destination lost")
	}
	if _, ok := d.routes.Select(&route.Request{Path: "/ok/x", Method: "GET"}); !ok {
		t.Error("old route not kept")
	}
	if d.policies.Evaluate(&authz.Request{HTTP: true, Path: "/deny/x"}).Allow {
		t.Error("old policy not kept")
	}
	if ep := s2.endpoints[netip.MustParseAddrPort("10.1.0.1:8080")]; ep == nil || ep.hbone.Port() != model.DefaultHBONEPort {
		t.Errorf("endpoint by target port: %+v", ep)
	}
}

func TestCompileInvalidNewDenyPolicyFailsClosed(t *testing.T) {
	s, err := compile(snapshot("/ok", "/deny/{**}/x"), emptyState())
	if err == nil {
		t.Fatal("invalid policy accepted")
	}
	d := s.lookup(netip.MustParseAddrPort("10.96.0.1:80"))
	if d.policies.Evaluate(&authz.Request{HTTP: true, Path: "/anything"}).Allow {
		t.Error("a never-valid DENY policy must deny everything")
	}
}
