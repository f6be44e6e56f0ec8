package xds

import (
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/ambit-mesh/ambit/api/workload"
	"github.com/ambit-mesh/ambit/waypoint/authz"
	"github.com/ambit-mesh/ambit/waypoint/model"
)

// recorder is an Updater keeping every snapshot.
type recorder struct{ snaps []*model.Snapshot }

func (r *recorder) Update(s *model.Snapshot) error {
	r.snaps = append(r.snaps, s)
	return nil
}

func (r *recorder) last(t *testing.T) *model.Snapshot {
	t.Helper()
	if len(r.snaps) == 0 {
		t.Fatal("no snapshot pushed")
	}
	return r.snaps[len(r.snaps)-1]
}

func resource(t *testing.T, name string, m proto.Message) *discovery.Resource {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return &discovery.Resource{Name: name, Version: "1", Resource: a}
}

func addressResources(t *testing.T) []*discovery.Resource {
	t.Helper()
	var out []*discovery.Resource
	for _, a := range addresses() {
		name := a.GetWorkload().GetUid()
		if s := a.GetService(); s != nil {
			name = s.GetNamespace() + "/" + s.GetHostname()
		}
		out = append(out, resource(t, name, a))
	}
	return out
}

func getOnly() *workload.Authorization {
	return &workload.Authorization{
		Name: "get-only", Namespace: "demo", Action: workload.Action_ALLOW,
		Targets: []*workload.PolicyTarget{{Kind: "Service", Namespace: "demo", Name: "echo"}},
		Rules:   []*workload.Rule{{Clauses: []*workload.Clause{{Matches: []*workload.Match{{Methods: []*workload.StringMatch{exact("GET")}}}}}}},
	}
}

func TestStoreWaitsForEveryTypeBeforeTheFirstSnapshot(t *testing.T) {
	rec := &recorder{}
	s := NewStore(gw, rec, nil)
	if rej := s.Apply(workload.AddressType, addressResources(t), nil); len(rej) != 0 {
		t.Fatalf("rejected %v", rej)
	}
	if len(rec.snaps) != 0 {
		t.Fatal("a snapshot without policies was pushed before the store was synced")
	}
	s.Apply(workload.AuthorizationType, []*discovery.Resource{resource(t, "demo/get-only", getOnly())}, nil)
	s.Synced()
	snap := rec.last(t)
	if snap.Gateway != gw || len(snap.Services) != 1 || len(snap.Workloads) != 2 || len(snap.Policies) != 1 {
		t.Fatalf("first snapshot: %+v", snap)
	}
	s.Apply(workload.AuthorizationType, nil, []string{"demo/get-only"})
	if snap := rec.last(t); len(snap.Policies) != 0 || len(snap.Services) != 1 {
		t.Fatalf("after removing the policy: %+v", snap)
	}
	s.Apply(workload.AddressType, nil, []string{"Kubernetes//Pod/demo/plain"})
	if snap := rec.last(t); len(snap.Workloads) != 1 || snap.Workloads[0].Name != "echo-1" {
		t.Fatalf("after removing a workload: %+v", snap.Workloads)
	}
}

func TestStoreRejectsBadResourcesAndKeepsTheLastGoodVersion(t *testing.T) {
	rec := &recorder{}
	s := NewStore(gw, rec, nil)
	s.Apply(workload.AddressType, addressResources(t), nil)
	s.Apply(workload.AuthorizationType, []*discovery.Resource{resource(t, "demo/get-only", getOnly())}, nil)
	s.Synced()

	badSvc := &workload.Address{Type: &workload.Address_Service{Service: &workload.Service{
		Name: "echo", Namespace: "demo", Hostname: "echo.demo.svc.cluster.local",
		Ports: []*workload.Port{{ServicePort: 70000}},
	}}}
	badPolicy := getOnly()
	badPolicy.Action = 7
	garbage := &discovery.Resource{Name: "demo/garbage", Resource: &anypb.Any{TypeUrl: workload.AddressType, Value: []byte{0xff, 0xff}}}
	wrongType := resource(t, "demo/wrong", getOnly())

	rej := s.Apply(workload.AddressType, []*discovery.Resource{
		resource(t, "demo/echo.demo.svc.cluster.local", badSvc), garbage, wrongType,
	}, nil)
	for _, name := range []string{"demo/echo.demo.svc.cluster.local", "demo/garbage", "demo/wrong"} {
		if rej[name] == nil {
			t.Errorf("%s not rejected", name)
		}
	}
	if snap := rec.last(t); len(snap.Services) != 1 || snap.Services[0].Ports[0].Port != 80 {
		t.Errorf("the last good service was not kept: %+v", snap.Services)
	}
	rej = s.Apply(workload.AuthorizationType, []*discovery.Resource{resource(t, "demo/get-only", badPolicy)}, nil)
	if rej["demo/get-only"] == nil {
		t.Error("bad policy not rejected")
	}
	if p := rec.last(t).Policies; len(p) != 1 || p[0].Action != authz.Allow || len(p[0].Rules) != 1 {
		t.Errorf("the last good policy was not kept: %+v", p)
	}
}

func TestStoreFailsClosedOnAPolicyNeverSeenValid(t *testing.T) {
	rec := &recorder{}
	s := NewStore(gw, rec, nil)
	bad := getOnly()
	bad.Action = workload.Action_DENY
	bad.Rules[0].Clauses[0].Matches[0].Methods = []*workload.StringMatch{{}} // unknown match type
	rej := s.Apply(workload.AuthorizationType, []*discovery.Resource{resource(t, "demo/get-only", bad)}, nil)
	s.Apply(workload.AddressType, nil, nil)
	s.Synced()
	if rej["demo/get-only"] == nil {
		t.Error("bad policy not rejected")
	}
	p := rec.last(t).Policies
	if len(p) != 1 || p[0].Action != authz.Deny || len(p[0].Rules) != 1 || len(p[0].Rules[0].Clauses) != 0 {
		t.Errorf("want a DENY matching everything, got %+v", p)
	}
}

func TestStoreRejectsUnknownTypes(t *testing.T) {
	rec := &recorder{}
	s := NewStore(gw, rec, nil)
	s.Synced()
	rej := s.Apply("type.googleapis.com/other", []*discovery.Resource{{Name: "x"}}, nil)
	if rej["x"] == nil || len(rec.snaps) != 1 {
		t.Errorf("rejected %v, snapshots %d", rej, len(rec.snaps))
	}
}

// TestStoreKeepsARouteIstiodLiteMarksInvalid: a route istiod-lite sends marked
// invalid (it rejected the spec and, restarted, knows no valid version) is
// NACKed and the version the waypoint had stays in its snapshots.
func TestStoreKeepsARouteIstiodLiteMarksInvalid(t *testing.T) {
	rec := &recorder{}
	s := NewStore(gw, rec, nil)
	s.Apply(workload.AddressType, addressResources(t), nil)
	s.Apply(workload.AuthorizationType, nil, nil)
	good := &workload.Route{Namespace: "demo", Name: "r",
		Parents: []*workload.RouteParent{{Kind: "Service", Namespace: "demo", Name: "echo"}},
		Rules:   []*workload.RouteRule{{Backends: []*workload.RouteBackend{{Namespace: "demo", Name: "echo", Port: 80, Weight: 1}}}}}
	if rej := s.Apply(workload.RouteType, []*discovery.Resource{resource(t, "HTTPRoute/demo/r", good)}, nil); len(rej) != 0 {
		t.Fatalf("good route rejected: %v", rej)
	}
	s.Synced()
	marked := &workload.Route{Namespace: "demo", Name: "r", Parents: good.Parents, Invalid: "rule 0: path regex: missing )"}
	rej := s.Apply(workload.RouteType, []*discovery.Resource{resource(t, "HTTPRoute/demo/r", marked)}, nil)
	if rej["HTTPRoute/demo/r"] == nil {
		t.Fatal("a route marked invalid was accepted")
	}
	if rs := rec.last(t).Routes; len(rs) != 1 || len(rs[0].Rules) != 1 || rs[0].Rules[0].Backends[0].Name != "echo" {
		t.Errorf("the last good route was not kept: %+v", rs)
	}
	s.Apply(workload.RouteType, nil, []string{"HTTPRoute/demo/r"})
	if rs := rec.last(t).Routes; len(rs) != 0 {
		t.Errorf("removed route still served: %+v", rs)
	}
}
