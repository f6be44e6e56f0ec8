package deployer

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambit-mesh/ambit/api/mesh"
)

func gateway(listeners ...gwv1.Listener) *gwv1.Gateway {
	return &gwv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "wp", UID: "u1", Generation: 2},
		Spec:       gwv1.GatewaySpec{GatewayClassName: mesh.WaypointGatewayClass, Listeners: listeners},
	}
}

var meshListener = gwv1.Listener{Name: "mesh", Port: mesh.PortHBONE, Protocol: mesh.WaypointProtocol}

func TestWaypointObjectsAreOwnedAndNeverCaptured(t *testing.T) {
	sa, dep, svc := waypointObjects(gateway(meshListener), PodConfig{Image: "img", ControlPlane: "cp:15012", TrustDomain: "cluster.local"})
	for _, o := range []metav1.Object{sa, dep, svc} {
		refs := o.GetOwnerReferences()
		if len(refs) != 1 || refs[0].Kind != "Gateway" || refs[0].UID != "u1" || refs[0].Controller == nil || !*refs[0].Controller {
			t.Errorf("%T not owned by its Gateway: %+v", o, refs)
		}
		if o.GetName() != "wp" || o.GetLabels()[mesh.LabelGatewayName] != "wp" {
			t.Errorf("%T name/labels: %s %v", o, o.GetName(), o.GetLabels())
		}
	}
	pod := dep.Spec.Template
	if pod.Labels[mesh.LabelDataplaneMode] != mesh.DataplaneModeNone || pod.Spec.ServiceAccountName != "wp" {
		t.Errorf("pod labels %v, service account %q", pod.Labels, pod.Spec.ServiceAccountName)
	}
	ports := map[int32]bool{}
	for _, p := range svc.Spec.Ports {
		ports[p.Port] = true
	}
	if !ports[15008] || !ports[15021] {
		t.Errorf("service ports %v, want 15008 and 15021", svc.Spec.Ports)
	}
	tok := pod.Spec.Volumes[0].Projected.Sources[0].ServiceAccountToken
	if tok.Audience != mesh.TokenAudience {
		t.Errorf("token audience %q", tok.Audience)
	}
}

func TestGatewayStatus(t *testing.T) {
	now := time.Unix(1000, 0)
	tests := []struct {
		name           string
		gw             *gwv1.Gateway
		programmed     bool
		addr           string
		wantAccepted   metav1.ConditionStatus
		wantProgrammed metav1.ConditionStatus
		wantAddress    bool
	}{
		{"pending", gateway(meshListener), false, "", metav1.ConditionTrue, metav1.ConditionFalse, false},
		{"running", gateway(meshListener), true, "10.96.0.9", metav1.ConditionTrue, metav1.ConditionTrue, true},
		{"no mesh listener", gateway(gwv1.Listener{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}), true, "10.96.0.9", metav1.ConditionFalse, metav1.ConditionFalse, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := DesiredGatewayStatus(tt.gw, tt.programmed, "R", "m", tt.addr, now)
			acc := meta.FindStatusCondition(st.Conditions, "Accepted")
			prog := meta.FindStatusCondition(st.Conditions, "Programmed")
			if acc.Status != tt.wantAccepted || prog.Status != tt.wantProgrammed || (len(st.Addresses) > 0) != tt.wantAddress {
				t.Errorf("accepted %s programmed %s addresses %v", acc.Status, prog.Status, st.Addresses)
			}
			if acc.ObservedGeneration != 2 || len(st.Listeners) != 1 {
				t.Errorf("observedGeneration %d, listeners %d", acc.ObservedGeneration, len(st.Listeners))
			}
			tt.gw.Status = st
			again := DesiredGatewayStatus(tt.gw, tt.programmed, "R", "m", tt.addr, now.Add(time.Hour))
			if !meta.FindStatusCondition(again.Conditions, "Accepted").LastTransitionTime.Equal(&acc.LastTransitionTime) {
				t.Error("an unchanged condition got a new transition time")
			}
		})
	}
}

// TestWaypointHasIstioResources: the waypoint container gets Istio's
// waypoint requests and limits (its CPU limit sets the Go runtime's
// GOMAXPROCS).
func TestWaypointHasIstioResources(t *testing.T) {
	_, dep, _ := waypointObjects(gateway(meshListener), PodConfig{Image: "img", ControlPlane: "cp:15012", TrustDomain: "cluster.local"})
	c := dep.Spec.Template.Spec.Containers[0]
	want := map[string]string{"requests.cpu": "100m", "requests.memory": "128Mi", "limits.cpu": "2", "limits.memory": "1Gi"}
	got := map[string]string{}
	for name, list := range map[string]corev1.ResourceList{"requests": c.Resources.Requests, "limits": c.Resources.Limits} {
		for r, q := range list {
			got[name+"."+string(r)] = q.String()
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("resources (-want +got):\n%s", diff)
	}
}
