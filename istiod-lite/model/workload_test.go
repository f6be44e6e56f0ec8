package model

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambit-mesh/ambit/api/mesh"
)

func TestBuildWorkload(t *testing.T) {
	ctrl := true
	tests := []struct {
		name   string
		mutate func(p *corev1.Pod)
		check  func(t *testing.T, w *Workload)
	}{
		{name: "identity from namespace and service account", check: func(t *testing.T, w *Workload) {
			if got := w.Identity.String(); got != "spiffe://cluster.local/ns/app/sa/echo" {
				t.Errorf("identity %s", got)
			}
			if w.UID != "Kubernetes//Pod/app/echo-1" || w.Node != "n1" || w.IPs[0].String() != "10.0.0.1" {
				t.Errorf("uid/node/ip: %s %s %v", w.UID, w.Node, w.IPs)
			}
		}},
		{name: "default service account", mutate: func(p *corev1.Pod) { p.Spec.ServiceAccountName = "" }, check: func(t *testing.T, w *Workload) {
			if w.ServiceAccount != "default" {
				t.Errorf("service account %q", w.ServiceAccount)
			}
		}},
		{name: "hbone only when redirection is enabled", check: func(t *testing.T, w *Workload) {
			if !w.HBONE {
				t.Error("enrolled pod not HBONE")
			}
		}},
		{name: "not captured yet", mutate: func(p *corev1.Pod) { p.Annotations = nil }, check: func(t *testing.T, w *Workload) {
			if w.HBONE {
				t.Error("pod without redirection annotation advertised as HBONE")
			}
		}},
		{name: "stale or other annotation value", mutate: func(p *corev1.Pod) { p.Annotations[mesh.AnnotationRedirection] = "disabled" }, check: func(t *testing.T, w *Workload) {
			if w.HBONE {
				t.Error("HBONE with redirection=disabled")
			}
		}},
		{name: "host network pods are not workloads", mutate: func(p *corev1.Pod) { p.Spec.HostNetwork = true }, check: func(t *testing.T, w *Workload) {
			if w != nil {
				t.Error("host network pod is a workload")
			}
		}},
		{name: "pods without IP are not workloads", mutate: func(p *corev1.Pod) { p.Status.PodIP = "" }, check: func(t *testing.T, w *Workload) {
			if w != nil {
				t.Error("pod without IP is a workload")
			}
		}},
		{name: "finished pods are not workloads", mutate: func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }, check: func(t *testing.T, w *Workload) {
			if w != nil {
				t.Error("succeeded pod is a workload")
			}
		}},
		{name: "unready pod is unhealthy", mutate: func(p *corev1.Pod) { p.Status.Conditions = nil }, check: func(t *testing.T, w *Workload) {
			if w.Healthy {
				t.Error("unready pod healthy")
			}
		}},
		{name: "dual stack", mutate: func(p *corev1.Pod) { p.Status.PodIPs = []corev1.PodIP{{IP: "10.0.0.1"}, {IP: "fd00::1"}} }, check: func(t *testing.T, w *Workload) {
			if len(w.IPs) != 2 || w.IPs[1].String() != "fd00::1" {
				t.Errorf("ips %v", w.IPs)
			}
		}},
		{name: "deployment owner and canonical names", mutate: func(p *corev1.Pod) {
			p.Labels = kv("pod-template-hash", "abc12", "app", "echo", "version", "v2")
			p.OwnerReferences = []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "echo-abc12", Controller: &ctrl}}
		}, check: func(t *testing.T, w *Workload) {
			if w.WorkloadName != "echo" || w.WorkloadKind != "Deployment" || w.CanonicalName != "echo" || w.CanonicalRevision != "v2" {
				t.Errorf("got %s %s %s %s", w.WorkloadName, w.WorkloadKind, w.CanonicalName, w.CanonicalRevision)
			}
		}},
		{name: "waypoint pods speak HBONE and are never bound to a waypoint", mutate: func(p *corev1.Pod) {
			p.Annotations = nil
			p.Labels = kv(mesh.LabelGatewayName, "wp", mesh.LabelUseWaypoint, "wp")
		}, check: func(t *testing.T, w *Workload) {
			if !w.IsWaypoint || !w.HBONE || w.Waypoint != nil {
				t.Errorf("waypoint pod: isWaypoint=%v hbone=%v waypoint=%v", w.IsWaypoint, w.HBONE, w.Waypoint)
			}
		}},
	}
	ws := testWaypoints(waypointGateway("app", "wp", kv(mesh.LabelWaypointFor, "all"), gwv1.NamespacesFromSame))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pod("app", "echo-1", "echo", "n1", "10.0.0.1", nil)
			if tt.mutate != nil {
				tt.mutate(p)
			}
			in := (&Inputs{}).withDefaults()
			tt.check(t, buildWorkload(&in, p, nil, namespace("app", nil), ws))
		})
	}
}

func TestServiceEndpointsAndPorts(t *testing.T) {
	svc := service("app", "echo", nil, kv("app", "echo"), "10.96.0.10")
	svc.Spec.Ports = []corev1.ServicePort{
		{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)},
		{Name: "named", Port: 81, TargetPort: intstr.FromString("web")},
		{Name: "same", Port: 9000},
		{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
	}
	withPort := pod("app", "echo-1", "echo", "n1", "10.0.0.1", kv("app", "echo"))
	withPort.Spec.Containers = []corev1.Container{{Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: 8081}}}}
	m := Build(&Inputs{
		Services: []*corev1.Service{svc},
		Pods: []*corev1.Pod{
			withPort,
			pod("app", "echo-2", "echo", "n2", "10.0.0.2", kv("app", "echo")),
			pod("app", "other", "other", "n2", "10.0.0.3", kv("app", "other")),
			pod("elsewhere", "echo", "echo", "n2", "10.0.0.4", kv("app", "echo")),
		},
	})
	s := m.Services["app/echo.app.svc.cluster.local"]
	if s == nil {
		t.Fatal("service missing")
	}
	wantEP := []string{"Kubernetes//Pod/app/echo-1", "Kubernetes//Pod/app/echo-2"}
	if d := cmp.Diff(wantEP, s.Endpoints); d != "" {
		t.Errorf("endpoints (-want +got):\n%s", d)
	}
	want1 := []PortMapping{{80, 8080}, {81, 8081}, {9000, 9000}}
	if d := cmp.Diff(want1, m.Workloads["Kubernetes//Pod/app/echo-1"].Services[s.Key]); d != "" {
		t.Errorf("echo-1 ports (-want +got):\n%s", d)
	}
	want2 := []PortMapping{{80, 8080}, {9000, 9000}} // no port named web
	if d := cmp.Diff(want2, m.Workloads["Kubernetes//Pod/app/echo-2"].Services[s.Key]); d != "" {
		t.Errorf("echo-2 ports (-want +got):\n%s", d)
	}
}
