package model

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambit-mesh/ambit/api/mesh"
)

// kv builds a label map from alternating keys and values.
func kv(pairs ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(pairs); i += 2 {
		m[pairs[i]] = pairs[i+1]
	}
	return m
}

func namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func serviceAccount(ns, name string, labels map[string]string) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}}
}

func pod(ns, name, sa, node, ip string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels,
			Annotations: kv(mesh.AnnotationRedirection, mesh.RedirectionEnabled)},
		Spec: corev1.PodSpec{ServiceAccountName: sa, NodeName: node},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}

func service(ns, name string, labels, selector map[string]string, vip string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.ServiceSpec{Selector: selector, ClusterIP: vip,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
}

// waypointGateway is a ready waypoint Gateway; from sets the mesh listener's
// allowedRoutes.namespaces.from when not empty.
func waypointGateway(ns, name string, labels map[string]string, from gwv1.FromNamespaces) *gwv1.Gateway {
	gw := &gwv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: gwv1.GatewaySpec{
			GatewayClassName: mesh.WaypointGatewayClass,
			Listeners:        []gwv1.Listener{{Name: mesh.WaypointListenerName, Port: mesh.PortHBONE, Protocol: mesh.WaypointProtocol}},
		},
		Status: gwv1.GatewayStatus{Addresses: []gwv1.GatewayStatusAddress{{Value: "10.96.0.100"}}},
	}
	if from != "" {
		gw.Spec.Listeners[0].AllowedRoutes = &gwv1.AllowedRoutes{Namespaces: &gwv1.RouteNamespaces{From: &from}}
	}
	return gw
}
