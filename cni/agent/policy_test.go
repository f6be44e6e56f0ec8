package agent

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestWants(t *testing.T) {
	ambientNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo", Labels: map[string]string{DataplaneModeLabel: "ambient"}}}
	plainNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}}
	pod := func(mut func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "demo", Labels: map[string]string{}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}}
		if mut != nil {
			mut(p)
		}
		return p
	}
	tests := []struct {
		name string
		pod  *corev1.Pod
		ns   *corev1.Namespace
		want bool
	}{
		{"namespace labeled", pod(nil), ambientNS, true},
		{"namespace not labeled", pod(nil), plainNS, false},
		{"namespace unknown", pod(nil), nil, false},
		{"pod labeled in plain namespace", pod(func(p *corev1.Pod) { p.Labels[DataplaneModeLabel] = "ambient" }), plainNS, true},
		{"pod opts out", pod(func(p *corev1.Pod) { p.Labels[DataplaneModeLabel] = "none" }), ambientNS, false},
		{"hostNetwork", pod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }), ambientNS, false},
		{"kube-system", pod(func(p *corev1.Pod) { p.Namespace = "kube-system"; p.Labels[DataplaneModeLabel] = "ambient" }), ambientNS, false},
		{"waypoint (istio)", pod(func(p *corev1.Pod) { p.Labels["gateway.istio.io/managed"] = "istio.io-mesh-controller" }), ambientNS, false},
		{"waypoint (gateway api)", pod(func(p *corev1.Pod) { p.Labels["gateway.networking.k8s.io/gateway-name"] = "wp" }), ambientNS, false},
		{"finished", pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), ambientNS, false},
		{"pending is wanted", pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }), ambientNS, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, why := Wants(tt.pod, tt.ns); got != tt.want {
				t.Errorf("Wants() = %v (%s), want %v", got, why, tt.want)
			}
		})
	}
}
