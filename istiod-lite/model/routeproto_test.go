package model

import (
	"maps"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambit-mesh/ambit/api/mesh"
	"github.com/ambit-mesh/ambit/api/workload"
)

func TestWaypointReceivesRoutesOfItsGatewayAndBoundServices(t *testing.T) {
	svcKind, core := gwv1.Kind("Service"), gwv1.Group("")
	port := gwv1.PortNumber(80)
	serviceParent := func(name string) gwv1.ParentReference {
		return gwv1.ParentReference{Group: &core, Kind: &svcKind, Name: gwv1.ObjectName(name), Port: &port}
	}
	gatewayParent := func(name string) gwv1.ParentReference { return gwv1.ParentReference{Name: gwv1.ObjectName(name)} }
	weight := int32(9)
	headerType := gwv1.HeaderMatchExact
	created := metav1.NewTime(time.Unix(1700000000, 0))
	route := func(name string, parents ...gwv1.ParentReference) *gwv1.HTTPRoute {
		return &gwv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: name, CreationTimestamp: created},
			Spec: gwv1.HTTPRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: parents}, Rules: []gwv1.HTTPRouteRule{{
				Matches: []gwv1.HTTPRouteMatch{{Headers: []gwv1.HTTPHeaderMatch{{Type: &headerType, Name: "x-version", Value: "v2"}}}},
				BackendRefs: []gwv1.HTTPBackendRef{
					{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "echo-v2", Port: &port}, Weight: &weight}},
					{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "echo", Port: &port}}},
				},
			}}},
		}
	}
	m := Build(&Inputs{
		Namespaces: []*corev1.Namespace{namespace("app", nil)},
		Services: []*corev1.Service{
			service("app", "echo", kv(mesh.LabelUseWaypoint, "wp"), kv("app", "echo"), "10.96.0.1"),
			service("app", "echo-v2", nil, kv("app", "echo2"), "10.96.0.2"),
		},
		Gateways: []*gwv1.Gateway{waypointGateway("app", "wp", nil, ""), waypointGateway("app", "other", nil, "")},
		HTTPRoutes: []*gwv1.HTTPRoute{
			route("gamma", serviceParent("echo")),
			route("on-waypoint", gatewayParent("wp")),
			route("unbound-service", serviceParent("echo-v2")),
			route("missing-parent", serviceParent("nope")),
		},
	})

	got := m.ForWaypoint(Ref{Namespace: "app", Name: "wp"})[workload.RouteType]
	names := slices.Sorted(maps.Keys(got))
	if want := []string{"HTTPRoute/app/gamma", "HTTPRoute/app/on-waypoint"}; !slices.Equal(names, want) {
		t.Fatalf("routes sent to waypoint wp: %v, want %v", names, want)
	}
	if other := m.ForWaypoint(Ref{Namespace: "app", Name: "other"})[workload.RouteType]; len(other) != 0 {
		t.Errorf("waypoint other received %d routes", len(other))
	}
	if _, ok := m.ForNode("node")[workload.RouteType]; ok {
		t.Error("ztunnels are offered routes")
	}

	want := &workload.Route{
		Kind: workload.RouteKind_HTTP_ROUTE, Namespace: "app", Name: "gamma", CreatedUnixNanos: created.UnixNano(),
		Parents: []*workload.RouteParent{{Kind: "Service", Namespace: "app", Name: "echo", Port: 80}},
		Rules: []*workload.RouteRule{{
			Matches: []*workload.RouteMatch{{Headers: []*workload.ValueMatch{{Name: "x-version", Value: "v2"}}}},
			Backends: []*workload.RouteBackend{
				{Namespace: "app", Name: "echo-v2", Port: 80, Weight: 9},
				{Namespace: "app", Name: "echo", Port: 80, Weight: 1},
			},
		}},
	}
	if g := got["HTTPRoute/app/gamma"].Message; !proto.Equal(g, want) {
		t.Errorf("gamma route:\n got %v\nwant %v", g, want)
	}
}
