package model

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestRouteStatus(t *testing.T) {
	svcKind, core := gwv1.Kind("Service"), gwv1.Group("")
	serviceParent := func(name string) gwv1.ParentReference {
		return gwv1.ParentReference{Group: &core, Kind: &svcKind, Name: gwv1.ObjectName(name)}
	}
	gatewayParent := func(name string) gwv1.ParentReference { return gwv1.ParentReference{Name: gwv1.ObjectName(name)} }
	backend := func(name string) gwv1.HTTPBackendRef {
		return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(name)}}}
	}
	route := func(name string, parents []gwv1.ParentReference, backends ...gwv1.HTTPBackendRef) *gwv1.HTTPRoute {
		return &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: name, Generation: 4},
			Spec: gwv1.HTTPRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: parents},
				Rules: []gwv1.HTTPRouteRule{{BackendRefs: backends}}}}
	}
	m := Build(&Inputs{
		Services: []*corev1.Service{service("app", "echo", nil, kv("app", "echo"), "10.96.0.1"), service("app", "echo-v2", nil, kv("app", "echo2"), "10.96.0.2")},
		Gateways: []*gwv1.Gateway{waypointGateway("app", "wp", nil, "")},
		HTTPRoutes: []*gwv1.HTTPRoute{
			route("gamma", []gwv1.ParentReference{serviceParent("echo")}, backend("echo-v2")),
			route("to-waypoint", []gwv1.ParentReference{gatewayParent("wp")}, backend("echo")),
			route("missing-parent", []gwv1.ParentReference{serviceParent("nope")}, backend("echo")),
			route("missing-backend", []gwv1.ParentReference{serviceParent("echo")}, backend("nope")),
			route("other-controller", []gwv1.ParentReference{gatewayParent("ingress")}, backend("echo")),
		},
	})
	want := map[string]string{ // Accepted/ResolvedRefs reasons
		"gamma": "Accepted/ResolvedRefs", "to-waypoint": "Accepted/ResolvedRefs",
		"missing-parent": "NoMatchingParent/ResolvedRefs", "missing-backend": "Accepted/BackendNotFound",
	}
	for name, w := range want {
		st, ok := m.Routes[StatusKey{Kind: KindHTTPRoute, Ref: Ref{Namespace: "app", Name: name}}]
		if !ok || len(st.Parents) != 1 {
			t.Errorf("%s: status %+v", name, st)
			continue
		}
		c := st.Parents[0].Conditions
		if got := c[0].Reason + "/" + c[1].Reason; got != w || c[0].ObservedGeneration != 4 {
			t.Errorf("%s: %s (generation %d), want %s", name, got, c[0].ObservedGeneration, w)
		}
	}
	if _, ok := m.Routes[StatusKey{Kind: KindHTTPRoute, Ref: Ref{Namespace: "app", Name: "other-controller"}}]; ok {
		t.Error("a route on another controller's Gateway got Ambit status")
	}
}
