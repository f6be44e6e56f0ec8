package kube

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/ambit-mesh/ambit/api/mesh"
	"github.com/ambit-mesh/ambit/api/workload"
	"github.com/ambit-mesh/ambit/istiod-lite/model"
)

// TestRebuildKeepsTheLastValidRoute: the controller builds each model from the
// previous one, so an invalid edit of a route leaves its last valid version served
// while the status says why the edit was refused.
func TestRebuildKeepsTheLastValidRoute(t *testing.T) {
	c, err := NewController(Clients{
		Kube: kubefake.NewClientset(), Gateway: gwfake.NewClientset(), Dynamic: dynamicfake.NewSimpleDynamicClient(runtime.NewScheme()),
	}, ControllerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	// The caches are filled by hand: nothing is started. Service echo is bound to
	// waypoint wp, which receives the route.
	core := c.sources.kube.Core().V1()
	for _, add := range []struct {
		idx interface{ Add(any) error }
		obj any
	}{
		{core.Namespaces().Informer().GetIndexer(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app"}}},
		{core.Services().Informer().GetIndexer(), &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "echo", Labels: map[string]string{mesh.LabelUseWaypoint: "wp"}},
			Spec:       corev1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}},
		{c.sources.gateway.Gateway().V1().Gateways().Informer().GetIndexer(), &gwv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "wp"},
			Spec: gwv1.GatewaySpec{GatewayClassName: mesh.WaypointGatewayClass,
				Listeners: []gwv1.Listener{{Name: mesh.WaypointListenerName, Port: mesh.PortHBONE, Protocol: mesh.WaypointProtocol}}},
			Status: gwv1.GatewayStatus{Addresses: []gwv1.GatewayStatusAddress{{Value: "10.96.0.50"}}}}},
	} {
		if err := add.idx.Add(add.obj); err != nil {
			t.Fatal(err)
		}
	}
	routes := c.sources.gateway.Gateway().V1().HTTPRoutes().Informer().GetIndexer()
	setRoute := func(gen int64, path string) {
		t.Helper()
		g, k, port := gwv1.Group(""), gwv1.Kind("Service"), gwv1.PortNumber(80)
		re := gwv1.PathMatchRegularExpression
		r := &gwv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "r", Generation: gen, UID: "u1"},
			Spec: gwv1.HTTPRouteSpec{
				CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Group: &g, Kind: &k, Name: "echo"}}},
				Rules: []gwv1.HTTPRouteRule{{
					Matches:     []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: &re, Value: &path}}},
					BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "echo", Port: &port}}}},
				}},
			},
		}
		if err := routes.Update(r); err != nil {
			t.Fatal(err)
		}
	}
	path := func() (string, metav1.Condition) {
		t.Helper()
		if err := c.rebuild(); err != nil {
			t.Fatal(err)
		}
		m := c.Latest()
		st := m.Routes[model.StatusKey{Kind: model.KindHTTPRoute, Ref: model.Ref{Namespace: "app", Name: "r"}}]
		if len(st.Parents) != 1 {
			t.Fatalf("route status %+v", st)
		}
		res := m.ForWaypoint(model.Ref{Namespace: "app", Name: "wp"})[workload.RouteType]["HTTPRoute/app/r"]
		if res == nil {
			t.Fatal("route not served to the waypoint")
		}
		rt := res.Message.(*workload.Route)
		if len(rt.GetRules()) == 0 || len(rt.GetRules()[0].GetMatches()) == 0 {
			return "(none: " + rt.GetInvalid() + ")", st.Parents[0].Conditions[0]
		}
		return rt.GetRules()[0].GetMatches()[0].GetPath(), st.Parents[0].Conditions[0]
	}

	setRoute(1, "/v1/.*")
	if p, c := path(); p != "/v1/.*" || c.Status != metav1.ConditionTrue {
		t.Fatalf("valid route: served %q, Accepted %s", p, c.Status)
	}
	setRoute(2, "/v2/(")
	if p, c := path(); p != "/v1/.*" || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "generation 1") {
		t.Errorf("invalid edit: served %q, Accepted %s %q", p, c.Status, c.Message)
	}
	setRoute(3, "/v3/.*")
	if p, c := path(); p != "/v3/.*" || c.Status != metav1.ConditionTrue {
		t.Errorf("valid edit: served %q, Accepted %s", p, c.Status)
	}
}
