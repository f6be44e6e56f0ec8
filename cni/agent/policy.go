package agent

import (
	corev1 "k8s.io/api/core/v1"
)

// Labels and annotations of Istio's ambient mode, honoured unchanged.
const (
	// DataplaneModeLabel enrolls a namespace or pod ("ambient"); "none" on a pod opts out.
	DataplaneModeLabel = "istio.io/dataplane-mode"
	// RedirectionAnnotation is written on pods whose redirection is live.
	RedirectionAnnotation = "ambient.istio.io/redirection"
	// RedirectionEnabled is RedirectionAnnotation's value.
	RedirectionEnabled = "enabled"

	modeAmbient = "ambient"
	modeNone    = "none"
)

// waypointLabels mark waypoint proxies, which are never captured.
var waypointLabels = []string{"gateway.istio.io/managed", "gateway.networking.k8s.io/gateway-name"}

// Wants reports whether pod (in namespace ns, nil if unknown) is to be captured, and
// why not when it is not. The pod label wins over the namespace label.
func Wants(pod *corev1.Pod, ns *corev1.Namespace) (bool, string) {
	switch {
	case pod.Spec.HostNetwork:
		return false, "hostNetwork pod"
	case pod.Namespace == "kube-system":
		return false, "kube-system"
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		return false, "pod finished"
	}
	for _, l := range waypointLabels {
		if _, ok := pod.Labels[l]; ok {
			return false, "waypoint pod"
		}
	}
	switch pod.Labels[DataplaneModeLabel] {
	case modeNone:
		return false, "pod opted out"
	case modeAmbient:
		return true, ""
	}
	if ns != nil && ns.Labels[DataplaneModeLabel] == modeAmbient {
		return true, ""
	}
	return false, "not labeled ambient"
}
