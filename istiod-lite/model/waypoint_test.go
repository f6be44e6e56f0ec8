package model

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambit-mesh/ambit/api/mesh"
)

func testWaypoints(gws ...*gwv1.Gateway) waypoints {
	ws := waypoints{byRef: map[Ref]*Waypoint{}, bySA: map[Ref]*Waypoint{}}
	for _, gw := range gws {
		w := waypointFromGateway(gw, nil, "cluster.local")
		ws.byRef[w.Ref] = w
		if w.ForServiceAccount != "" {
			ws.bySA[Ref{Namespace: w.Ref.Namespace, Name: w.ForServiceAccount}] = w
		}
	}
	return ws
}

func TestWorkloadWaypointBinding(t *testing.T) {
	use := func(name string) map[string]string { return kv(mesh.LabelUseWaypoint, name) }
	forWL := kv(mesh.LabelWaypointFor, mesh.WaypointForWorkload)
	legacy := waypointGateway("app", "legacy-wp", nil, "")
	legacy.Annotations = kv(mesh.AnnotationForServiceAccount, "legacy-sa")
	notReady := waypointGateway("app", "pending", forWL, "")
	notReady.Status.Addresses = nil
	ws := testWaypoints(
		waypointGateway("app", "ns-wp", kv(mesh.LabelWaypointFor, mesh.WaypointForAll), ""),
		waypointGateway("app", "sa-wp", forWL, ""),
		waypointGateway("app", "pod-wp", forWL, ""),
		waypointGateway("app", "svc-only", nil, ""),
		waypointGateway("shared", "shared-wp", forWL, gwv1.NamespacesFromAll),
		waypointGateway("private", "private-wp", forWL, ""),
		legacy, notReady,
	)
	tests := []struct {
		name        string
		podLabels   map[string]string
		sa          *corev1.ServiceAccount
		saName      string
		nsLabels    map[string]string
		want        string
		wantProblem string
	}{
		{name: "no binding", want: ""},
		{name: "namespace binding", nsLabels: use("ns-wp"), want: "app/ns-wp"},
		{name: "service account beats namespace", sa: serviceAccount("app", "sa", use("sa-wp")), nsLabels: use("ns-wp"), want: "app/sa-wp"},
		{name: "pod beats service account and namespace", podLabels: use("pod-wp"), sa: serviceAccount("app", "sa", use("sa-wp")), nsLabels: use("ns-wp"), want: "app/pod-wp"},
		{name: "pod none opts out", podLabels: use("none"), sa: serviceAccount("app", "sa", use("sa-wp")), nsLabels: use("ns-wp"), want: ""},
		{name: "service account none opts out of namespace", sa: serviceAccount("app", "sa", use("none")), nsLabels: use("ns-wp"), want: ""},
		{name: "namespace none is no binding", nsLabels: use("none"), want: ""},
		{name: "waypoint for services only is not used for workload traffic", podLabels: use("svc-only"), nsLabels: use("ns-wp"), want: "", wantProblem: ReasonWaypointWrongType},
		{name: "missing waypoint does not fall back", podLabels: use("nope"), nsLabels: use("ns-wp"), want: "", wantProblem: ReasonWaypointNotFound},
		{name: "waypoint without address is not used", podLabels: use("pending"), want: "", wantProblem: ReasonWaypointNotReady},
		{name: "cross-namespace waypoint allowing all", podLabels: kv(mesh.LabelUseWaypoint, "shared-wp", mesh.LabelUseWaypointNamespace, "shared"), want: "shared/shared-wp"},
		{name: "cross-namespace on service account", sa: serviceAccount("app", "sa", kv(mesh.LabelUseWaypoint, "shared-wp", mesh.LabelUseWaypointNamespace, "shared")), want: "shared/shared-wp"},
		{name: "cross-namespace waypoint allowing same namespace only", nsLabels: kv(mesh.LabelUseWaypoint, "private-wp", mesh.LabelUseWaypointNamespace, "private"), want: "", wantProblem: ReasonWaypointNotAllowed},
		{name: "legacy for-service-account annotation", saName: "legacy-sa", nsLabels: use("ns-wp"), want: "app/legacy-wp"},
		{name: "service account label beats legacy annotation", saName: "legacy-sa", sa: serviceAccount("app", "legacy-sa", use("sa-wp")), want: "app/sa-wp"},
		{name: "pod label beats legacy annotation", saName: "legacy-sa", podLabels: use("pod-wp"), want: "app/pod-wp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			saName := tt.saName
			if tt.sa != nil {
				saName = tt.sa.Name
			}
			p := pod("app", "p", saName, "n1", "10.0.0.1", tt.podLabels)
			w, problem := ws.WorkloadWaypoint(p, tt.sa, namespace("app", tt.nsLabels))
			got := ""
			if w != nil {
				got = w.Ref.String()
			}
			if got != tt.want || problem != tt.wantProblem {
				t.Errorf("waypoint = %q (problem %q), want %q (problem %q)", got, problem, tt.want, tt.wantProblem)
			}
		})
	}
}

func TestServiceWaypointBinding(t *testing.T) {
	use := func(name string) map[string]string { return kv(mesh.LabelUseWaypoint, name) }
	ws := testWaypoints(
		waypointGateway("app", "ns-wp", nil, ""),
		waypointGateway("app", "svc-wp", nil, ""),
		waypointGateway("app", "wl-only", kv(mesh.LabelWaypointFor, mesh.WaypointForWorkload), ""),
		waypointGateway("app", "all", kv(mesh.LabelWaypointFor, mesh.WaypointForAll), ""),
		waypointGateway("shared", "shared-wp", nil, gwv1.NamespacesFromAll),
	)
	tests := []struct {
		name        string
		svcLabels   map[string]string
		nsLabels    map[string]string
		want        string
		wantProblem string
	}{
		{name: "no binding"},
		{name: "namespace binding", nsLabels: use("ns-wp"), want: "app/ns-wp"},
		{name: "service beats namespace", svcLabels: use("svc-wp"), nsLabels: use("ns-wp"), want: "app/svc-wp"},
		{name: "service none opts out", svcLabels: use("none"), nsLabels: use("ns-wp")},
		{name: "waypoint for all serves services", svcLabels: use("all"), want: "app/all"},
		{name: "waypoint for workloads only is not used", svcLabels: use("wl-only"), nsLabels: use("ns-wp"), wantProblem: ReasonWaypointWrongType},
		{name: "cross-namespace", svcLabels: kv(mesh.LabelUseWaypoint, "shared-wp", mesh.LabelUseWaypointNamespace, "shared"), want: "shared/shared-wp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := service("app", "s", tt.svcLabels, kv("app", "s"), "10.96.0.1")
			w, problem := ws.ServiceWaypoint(s, namespace("app", tt.nsLabels))
			got := ""
			if w != nil {
				got = w.Ref.String()
			}
			if got != tt.want || problem != tt.wantProblem {
				t.Errorf("waypoint = %q (problem %q), want %q (problem %q)", got, problem, tt.want, tt.wantProblem)
			}
		})
	}
}

func TestWaypointForComesFromGatewayThenNamespace(t *testing.T) {
	tests := []struct {
		name                string
		gwLabels, nsLabels  map[string]string
		annotations         map[string]string
		want                string
		workloads, services bool
	}{
		{name: "default is service", want: mesh.WaypointForService, services: true},
		{name: "gateway label", gwLabels: kv(mesh.LabelWaypointFor, "all"), want: "all", workloads: true, services: true},
		{name: "namespace label", nsLabels: kv(mesh.LabelWaypointFor, "workload"), want: "workload", workloads: true},
		{name: "gateway beats namespace", gwLabels: kv(mesh.LabelWaypointFor, "none"), nsLabels: kv(mesh.LabelWaypointFor, "workload"), want: "none"},
		{name: "legacy annotation means workload", annotations: kv(mesh.AnnotationForServiceAccount, "sa"), want: "workload", workloads: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := waypointGateway("ns", "wp", tt.gwLabels, "")
			gw.Annotations = tt.annotations
			w := waypointFromGateway(gw, tt.nsLabels, "cluster.local")
			if w.For != tt.want || w.ServesWorkloads() != tt.workloads || w.ServesServices() != tt.services {
				t.Errorf("for = %q workloads=%v services=%v, want %q %v %v", w.For, w.ServesWorkloads(), w.ServesServices(), tt.want, tt.workloads, tt.services)
			}
		})
	}
	other := waypointGateway("ns", "gw", nil, "")
	other.Spec.GatewayClassName = "envoy"
	if waypointFromGateway(other, nil, "cluster.local") != nil {
		t.Error("a Gateway of another class is not a waypoint")
	}
}
