package model

import (
	"testing"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambit-mesh/ambit/api/mesh"
	"github.com/ambit-mesh/ambit/api/workload"
)

// parentRef builds a parentRef: kind "Service" or "Gateway", section and port
// optional ("" and 0 for none), namespace "" for the route's.
func parentRef(kind, ns, name, section string, port int32) gwv1.ParentReference {
	p := gwv1.ParentReference{Name: gwv1.ObjectName(name)}
	if kind == "Service" {
		g, k := gwv1.Group(""), gwv1.Kind("Service")
		p.Group, p.Kind = &g, &k
	}
	if ns != "" {
		n := gwv1.Namespace(ns)
		p.Namespace = &n
	}
	if section != "" {
		s := gwv1.SectionName(section)
		p.SectionName = &s
	}
	if port != 0 {
		pn := gwv1.PortNumber(port)
		p.Port = &pn
	}
	return p
}

func httpRoute(ns, name string, parents []gwv1.ParentReference, rules ...gwv1.HTTPRouteRule) *gwv1.HTTPRoute {
	return &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1, UID: types.UID("uid-" + name)},
		Spec:       gwv1.HTTPRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: parents}, Rules: rules},
	}
}

func grpcRoute(ns, name string, parents []gwv1.ParentReference) *gwv1.GRPCRoute {
	return &gwv1.GRPCRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1},
		Spec:       gwv1.GRPCRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: parents}},
	}
}

// TestRouteParentSectionNameAndPort: sectionName and port select a Service port
// (GAMMA) or a waypoint listener with Gateway API semantics; the status says why a
// ref does not attach, and the Route resource carries what the waypoint applies the
// route to.
func TestRouteParentSectionNameAndPort(t *testing.T) {
	echo := service("app", "echo", kv(mesh.LabelUseWaypoint, "wp"), kv("app", "echo"), "10.96.0.1")
	echo.Spec.Ports = []corev1.ServicePort{{Name: "http", Port: 80}, {Name: "grpc", Port: 9090}}
	wp := waypointGateway("app", "wp", nil, "")
	wp.Spec.Listeners = append(wp.Spec.Listeners, gwv1.Listener{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType})
	httpOnly := waypointGateway("app", "http-only", nil, "")
	httpOnly.Spec.Listeners[0].AllowedRoutes = &gwv1.AllowedRoutes{Kinds: []gwv1.RouteGroupKind{{Kind: KindHTTPRoute}}}
	selector := waypointGateway("app", "selector", nil, gwv1.NamespacesFromSelector)
	selector.Spec.Listeners[0].AllowedRoutes.Namespaces.Selector = &metav1.LabelSelector{MatchLabels: kv("team", "a")}
	in := &Inputs{
		Namespaces: []*corev1.Namespace{namespace("app", nil), namespace("team-a", kv("team", "a")), namespace("team-b", kv("team", "b"))},
		Services:   []*corev1.Service{echo},
		Gateways:   []*gwv1.Gateway{wp, httpOnly, selector},
	}
	svc := func(port uint32) *workload.RouteParent {
		return &workload.RouteParent{Kind: "Service", Namespace: "app", Name: "echo", Port: port}
	}
	gw := func(name string) *workload.RouteParent {
		return &workload.RouteParent{Kind: "Gateway", Namespace: "app", Name: name}
	}
	tests := []struct {
		name   string
		kind   string // KindHTTPRoute unless set
		ns     string // app unless set
		parent gwv1.ParentReference
		reason gwv1.RouteConditionReason
		want   *workload.RouteParent // nil: not attached
	}{
		{name: "service", parent: parentRef("Service", "", "echo", "", 0), reason: gwv1.RouteReasonAccepted, want: svc(0)},
		{name: "service port", parent: parentRef("Service", "", "echo", "", 80), reason: gwv1.RouteReasonAccepted, want: svc(80)},
		{name: "service port name", parent: parentRef("Service", "", "echo", "grpc", 0), reason: gwv1.RouteReasonAccepted, want: svc(9090)},
		{name: "service port name and number", parent: parentRef("Service", "", "echo", "http", 80), reason: gwv1.RouteReasonAccepted, want: svc(80)},
		{name: "service port name and other number", parent: parentRef("Service", "", "echo", "http", 9090), reason: gwv1.RouteReasonNoMatchingParent},
		{name: "service unknown port name", parent: parentRef("Service", "", "echo", "admin", 0), reason: gwv1.RouteReasonNoMatchingParent},
		{name: "service unknown port", parent: parentRef("Service", "", "echo", "", 81), reason: gwv1.RouteReasonNoMatchingParent},
		{name: "missing service", parent: parentRef("Service", "", "nope", "", 0), reason: gwv1.RouteReasonNoMatchingParent},
		{name: "waypoint", parent: parentRef("Gateway", "", "wp", "", 0), reason: gwv1.RouteReasonAccepted, want: gw("wp")},
		{name: "waypoint mesh listener", parent: parentRef("Gateway", "", "wp", "mesh", 0), reason: gwv1.RouteReasonAccepted, want: gw("wp")},
		// The listener port is not a service port: the route applies to all the waypoint serves.
		{name: "waypoint listener port", parent: parentRef("Gateway", "", "wp", "", 15008), reason: gwv1.RouteReasonAccepted, want: gw("wp")},
		{name: "waypoint listener name and port", parent: parentRef("Gateway", "", "wp", "mesh", 15008), reason: gwv1.RouteReasonAccepted, want: gw("wp")},
		{name: "waypoint listener name and other port", parent: parentRef("Gateway", "", "wp", "mesh", 80), reason: gwv1.RouteReasonNoMatchingParent},
		{name: "waypoint unknown listener", parent: parentRef("Gateway", "", "wp", "nope", 0), reason: gwv1.RouteReasonNoMatchingParent},
		{name: "waypoint unknown port", parent: parentRef("Gateway", "", "wp", "", 8080), reason: gwv1.RouteReasonNoMatchingParent},
		{name: "waypoint HTTP listener takes no routes", parent: parentRef("Gateway", "", "wp", "http", 0), reason: gwv1.RouteReasonNotAllowedByListeners},
		{name: "waypoint listener port of the HTTP listener", parent: parentRef("Gateway", "", "wp", "", 80), reason: gwv1.RouteReasonNotAllowedByListeners},
		{name: "listener kinds allow the HTTPRoute", parent: parentRef("Gateway", "", "http-only", "mesh", 0), reason: gwv1.RouteReasonAccepted, want: gw("http-only")},
		{name: "listener kinds refuse the GRPCRoute", kind: KindGRPCRoute, parent: parentRef("Gateway", "", "http-only", "mesh", 0), reason: gwv1.RouteReasonNotAllowedByListeners},
		{name: "GRPCRoute on the waypoint", kind: KindGRPCRoute, parent: parentRef("Gateway", "", "wp", "mesh", 0), reason: gwv1.RouteReasonAccepted, want: gw("wp")},
		{name: "other namespace refused by Same", ns: "team-a", parent: parentRef("Gateway", "app", "wp", "", 0), reason: gwv1.RouteReasonNotAllowedByListeners},
		{name: "other namespace selected", ns: "team-a", parent: parentRef("Gateway", "app", "selector", "mesh", 0), reason: gwv1.RouteReasonAccepted, want: gw("selector")},
		{name: "other namespace not selected", ns: "team-b", parent: parentRef("Gateway", "app", "selector", "mesh", 0), reason: gwv1.RouteReasonNotAllowedByListeners},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := tt.ns
			if ns == "" {
				ns = "app"
			}
			in := *in
			kind := tt.kind
			if kind == "" {
				kind = KindHTTPRoute
				in.HTTPRoutes = []*gwv1.HTTPRoute{httpRoute(ns, "r", []gwv1.ParentReference{tt.parent})}
			} else {
				in.GRPCRoutes = []*gwv1.GRPCRoute{grpcRoute(ns, "r", []gwv1.ParentReference{tt.parent})}
			}
			m := Build(&in)
			key := Ref{Namespace: ns, Name: "r"}
			st := m.Routes[StatusKey{Kind: kind, Ref: key}]
			if len(st.Parents) != 1 {
				t.Fatalf("status parents %+v", st.Parents)
			}
			acc := st.Parents[0].Conditions[0]
			if acc.Reason != string(tt.reason) || (acc.Status == metav1.ConditionTrue) != (tt.want != nil) || acc.Message == "" {
				t.Errorf("Accepted %s %s (%s), want reason %s", acc.Status, acc.Reason, acc.Message, tt.reason)
			}
			got := m.routeProtos[RouteName(kind, key)]
			switch {
			case tt.want == nil && got != nil:
				t.Errorf("served %v although not attached", got)
			case tt.want != nil && (got == nil || len(got.GetParents()) != 1 || !proto.Equal(got.GetParents()[0], tt.want)):
				t.Errorf("served parents %v, want %v", got.GetParents(), tt.want)
			}
		})
	}
}

// TestRouteParentsMergeDuplicates: two refs selecting the same listener give one
// parent; each ref gets its own status entry.
func TestRouteParentsMergeDuplicates(t *testing.T) {
	m := Build(&Inputs{
		Gateways: []*gwv1.Gateway{waypointGateway("app", "wp", nil, "")},
		HTTPRoutes: []*gwv1.HTTPRoute{httpRoute("app", "r", []gwv1.ParentReference{
			parentRef("Gateway", "", "wp", "mesh", 0), parentRef("Gateway", "", "wp", "", 15008),
		})},
	})
	if st := m.Routes[StatusKey{Kind: KindHTTPRoute, Ref: Ref{Namespace: "app", Name: "r"}}]; len(st.Parents) != 2 {
		t.Errorf("status parents %+v, want one per ref", st.Parents)
	}
	if ps := m.routeProtos["HTTPRoute/app/r"].GetParents(); len(ps) != 1 {
		t.Errorf("parents %v, want one", ps)
	}
}
