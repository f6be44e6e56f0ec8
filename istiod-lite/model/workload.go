package model

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ambit-mesh/ambit/api/mesh"
)

// Workload is one pod as the mesh sees it.
type Workload struct {
	// UID is "<cluster>//Pod/<namespace>/<name>", the Address resource name.
	UID            string
	Name           string
	Namespace      string
	Node           string
	ServiceAccount string
	Identity       spiffeid.ID
	IPs            []netip.Addr
	Labels         map[string]string
	// HBONE is true when the pod accepts HBONE: its redirection is live (annotation
	// ambient.istio.io/redirection=enabled) or it is a waypoint.
	HBONE bool
	// IsWaypoint is true for the pods of a waypoint Gateway.
	IsWaypoint bool
	Healthy    bool
	// Waypoint receives traffic addressed to the pod's IPs; WaypointProblem says why a
	// binding the user asked for is not in effect.
	Waypoint        *Waypoint
	WaypointProblem string
	// Services the pod is an endpoint of, by service key, with port mappings.
	Services map[string][]PortMapping
	// Policies are the names of the Authorization resources applying to this workload
	// by selector (Istio's WORKLOAD_SELECTOR scope), sorted.
	Policies []string

	CanonicalName     string
	CanonicalRevision string
	WorkloadName      string
	WorkloadKind      string
}

// PortMapping maps a service port to the port the pod listens on.
type PortMapping struct {
	ServicePort uint32
	TargetPort  uint32
}

// Service is a Kubernetes Service as the mesh sees it.
type Service struct {
	Ref Ref
	// Key is "<namespace>/<hostname>", the Address resource name.
	Key      string
	Hostname string
	VIPs     []netip.Addr
	Ports    []corev1.ServicePort
	// Waypoint receives traffic addressed to the Service; WaypointProblem says why a
	// binding the user asked for is not in effect.
	Waypoint        *Waypoint
	WaypointProblem string
	// Endpoints are the UIDs of the workloads backing the service, sorted.
	Endpoints []string
	selector  labels.Selector
	// IsWaypoint is true for a waypoint's own Service.
	IsWaypoint bool
}

// WorkloadUID is the Address resource name of a pod.
func WorkloadUID(cluster, namespace, name string) string {
	return cluster + "//Pod/" + namespace + "/" + name
}

// buildWorkload returns the workload of a pod, or nil if the pod is not addressable
// (no IP yet, finished, or host-networked: its IP is the node's).
func buildWorkload(in *Inputs, pod *corev1.Pod, sa *corev1.ServiceAccount, ns *corev1.Namespace, ws waypoints) *Workload {
	if pod.Spec.HostNetwork || pod.Status.PodIP == "" ||
		pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	ips := podIPs(pod)
	if len(ips) == 0 {
		return nil
	}
	saName := serviceAccountName(pod)
	td, err := spiffeid.TrustDomainFromString(in.TrustDomain)
	if err != nil {
		return nil
	}
	id, err := spiffeid.FromSegments(td, "ns", pod.Namespace, "sa", saName)
	if err != nil {
		return nil
	}
	w := &Workload{
		UID:            WorkloadUID(in.ClusterID, pod.Namespace, pod.Name),
		Name:           pod.Name,
		Namespace:      pod.Namespace,
		Node:           pod.Spec.NodeName,
		ServiceAccount: saName,
		Identity:       id,
		IPs:            ips,
		Labels:         pod.Labels,
		Healthy:        podReady(pod) && pod.DeletionTimestamp == nil,
		Services:       map[string][]PortMapping{},
	}
	w.WorkloadName, w.WorkloadKind = podOwner(pod)
	w.CanonicalName = firstLabel(pod.Labels, w.WorkloadName, "service.istio.io/canonical-name", "app.kubernetes.io/name", "app")
	w.CanonicalRevision = firstLabel(pod.Labels, "latest", "service.istio.io/canonical-revision", "app.kubernetes.io/version", "version")
	if gw := pod.Labels[mesh.LabelGatewayName]; gw != "" && ws.byRef[Ref{Namespace: pod.Namespace, Name: gw}] != nil {
		w.IsWaypoint = true
	}
	w.HBONE = w.IsWaypoint || pod.Annotations[mesh.AnnotationRedirection] == mesh.RedirectionEnabled
	if !w.IsWaypoint {
		w.Waypoint, w.WaypointProblem = ws.WorkloadWaypoint(pod, sa, ns)
	}
	return w
}

func podIPs(pod *corev1.Pod) []netip.Addr {
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	add := func(s string) {
		if a, err := netip.ParseAddr(s); err == nil && !seen[a] {
			seen[a] = true
			out = append(out, a.Unmap())
		}
	}
	add(pod.Status.PodIP)
	for _, ip := range pod.Status.PodIPs {
		add(ip.IP)
	}
	return out
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podOwner names the controller of a pod the way users know it: a ReplicaSet's pods
// belong to its Deployment.
func podOwner(pod *corev1.Pod) (name, kind string) {
	for _, o := range pod.OwnerReferences {
		if o.Controller == nil || !*o.Controller {
			continue
		}
		switch o.Kind {
		case "ReplicaSet":
			if h := pod.Labels["pod-template-hash"]; h != "" && strings.HasSuffix(o.Name, "-"+h) {
				return strings.TrimSuffix(o.Name, "-"+h), "Deployment"
			}
			return o.Name, "ReplicaSet"
		default:
			return o.Name, o.Kind
		}
	}
	return pod.Name, "Pod"
}

func firstLabel(l map[string]string, def string, keys ...string) string {
	for _, k := range keys {
		if v := l[k]; v != "" {
			return v
		}
	}
	return def
}

// buildService returns the mesh view of a Service, or nil for ExternalName services.
func buildService(in *Inputs, svc *corev1.Service, ns *corev1.Namespace, ws waypoints) *Service {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	host := svc.Name + "." + svc.Namespace + ".svc." + in.DomainSuffix
	s := &Service{
		Ref:      Ref{Namespace: svc.Namespace, Name: svc.Name},
		Key:      svc.Namespace + "/" + host,
		Hostname: host,
		Ports:    svc.Spec.Ports,
	}
	for _, ip := range append([]string{svc.Spec.ClusterIP}, svc.Spec.ClusterIPs...) {
		if a, err := netip.ParseAddr(ip); err == nil && !slices.Contains(s.VIPs, a) {
			s.VIPs = append(s.VIPs, a)
		}
	}
	if len(svc.Spec.Selector) > 0 {
		s.selector = labels.SelectorFromSet(svc.Spec.Selector)
	}
	if gw := svc.Labels[mesh.LabelGatewayName]; gw != "" && ws.byRef[Ref{Namespace: svc.Namespace, Name: gw}] != nil {
		s.IsWaypoint = true
	} else {
		s.Waypoint, s.WaypointProblem = ws.ServiceWaypoint(svc, ns)
	}
	return s
}

// selects says whether the service's selector picks the pod.
func (s *Service) selects(pod *corev1.Pod) bool {
	return s.selector != nil && pod.Namespace == s.Ref.Namespace && s.selector.Matches(labels.Set(pod.Labels))
}

// portMappings maps the service's ports to the pod's ports; a named target port the
// pod does not declare is left out (Kubernetes does the same for endpoints).
func (s *Service) portMappings(pod *corev1.Pod) []PortMapping {
	var out []PortMapping
	for _, p := range s.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			continue
		}
		target := uint32(p.Port)
		switch {
		case p.TargetPort.Type == intstr.String && p.TargetPort.StrVal != "":
			target = namedPort(pod, p.TargetPort.StrVal)
		case p.TargetPort.IntVal != 0:
			target = uint32(p.TargetPort.IntVal)
		}
		if target != 0 {
			out = append(out, PortMapping{ServicePort: uint32(p.Port), TargetPort: target})
		}
	}
	return out
}

func namedPort(pod *corev1.Pod, name string) uint32 {
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == name && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
				return uint32(p.ContainerPort)
			}
		}
	}
	return 0
}
