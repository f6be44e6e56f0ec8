package model

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambit-mesh/ambit/api/mesh"
)

// Waypoint is a Gateway of class istio-waypoint as the model sees it.
type Waypoint struct {
	Ref Ref
	// For is the traffic it handles: mesh.WaypointForService, ...Workload, ...All, ...None.
	For string
	// ForServiceAccount is the legacy istio.io/for-service-account annotation: the
	// waypoint serves the pods of that ServiceAccount in its namespace.
	ForServiceAccount string
	// Hostname is the DNS name of the waypoint's Service.
	Hostname string
	// Ready is true once the Gateway's status has an address: only then do clients use it.
	Ready bool
	// from and selector say which namespaces may bind to it (the mesh listener's
	// allowedRoutes; Same by default).
	from     gwv1.FromNamespaces
	selector labels.Selector
	// listeners are the Gateway's listeners, for route attachment.
	listeners []listener
}

// listener is a Gateway listener as route attachment sees it.
type listener struct {
	name     string
	port     int32
	protocol string
	// kinds are allowedRoutes.kinds; empty allows HTTPRoute and GRPCRoute.
	kinds    []gwv1.RouteGroupKind
	from     gwv1.FromNamespaces
	selector labels.Selector
}

// Binding problems, reported on workloads and services (and by kubectl ambit).
const (
	ReasonWaypointNotFound   = "WaypointNotFound"
	ReasonWaypointNotAllowed = "WaypointNotAllowed"
	ReasonWaypointWrongType  = "WaypointWrongType"
	ReasonWaypointNotReady   = "WaypointNotReady"
)

// waypointFromGateway returns the Waypoint of a Gateway, or nil if the Gateway is not
// a waypoint. nsLabels are the labels of the Gateway's namespace.
func waypointFromGateway(gw *gwv1.Gateway, nsLabels map[string]string, domainSuffix string) *Waypoint {
	if gw.Spec.GatewayClassName != mesh.WaypointGatewayClass {
		return nil
	}
	w := &Waypoint{
		Ref:               Ref{Namespace: gw.Namespace, Name: gw.Name},
		ForServiceAccount: gw.Annotations[mesh.AnnotationForServiceAccount],
		Hostname:          fmt.Sprintf("%s.%s.svc.%s", gw.Name, gw.Namespace, domainSuffix),
		Ready:             len(gw.Status.Addresses) > 0,
		from:              gwv1.NamespacesFromSame,
	}
	switch {
	case gw.Labels[mesh.LabelWaypointFor] != "":
		w.For = gw.Labels[mesh.LabelWaypointFor]
	case nsLabels[mesh.LabelWaypointFor] != "":
		w.For = nsLabels[mesh.LabelWaypointFor]
	case w.ForServiceAccount != "":
		// Istio's legacy per-service-account waypoints handled workload traffic.
		w.For = mesh.WaypointForWorkload
	default:
		w.For = mesh.WaypointForService
	}
	meshSeen := false
	for _, l := range gw.Spec.Listeners {
		ln := listener{name: string(l.Name), port: int32(l.Port), protocol: string(l.Protocol), from: gwv1.NamespacesFromSame}
		if ar := l.AllowedRoutes; ar != nil {
			ln.kinds = ar.Kinds
			if rn := ar.Namespaces; rn != nil {
				if rn.From != nil {
					ln.from = *rn.From
				}
				if ln.from == gwv1.NamespacesFromSelector {
					sel, err := metav1.LabelSelectorAsSelector(rn.Selector)
					if err != nil {
						sel = labels.Nothing()
					}
					ln.selector = sel
				}
			}
		}
		w.listeners = append(w.listeners, ln)
		// Bindings follow the first mesh listener's allowedRoutes.namespaces.
		if !meshSeen && ln.protocol == mesh.WaypointProtocol && l.AllowedRoutes != nil && l.AllowedRoutes.Namespaces != nil {
			meshSeen = true
			w.from, w.selector = ln.from, ln.selector
		}
	}
	return w
}

// allowsNamespace says whether objects in namespace ns (with nsLabels) may bind to w.
func (w *Waypoint) allowsNamespace(ns string, nsLabels map[string]string) bool {
	return namespaceAllowed(w.from, w.selector, w.Ref.Namespace, ns, nsLabels)
}

// namespaceAllowed applies allowedRoutes.namespaces of a listener of a Gateway in
// namespace own to namespace ns (with nsLabels).
func namespaceAllowed(from gwv1.FromNamespaces, sel labels.Selector, own, ns string, nsLabels map[string]string) bool {
	if ns == own {
		return from != gwv1.NamespacesFromNone
	}
	switch from {
	case gwv1.NamespacesFromAll:
		return true
	case gwv1.NamespacesFromSelector:
		return sel != nil && sel.Matches(labels.Set(nsLabels))
	}
	return false
}

// ServesWorkloads says whether w handles traffic addressed to pod IPs.
func (w *Waypoint) ServesWorkloads() bool {
	return w.For == mesh.WaypointForWorkload || w.For == mesh.WaypointForAll
}

// ServesServices says whether w handles traffic addressed to Services.
func (w *Waypoint) ServesServices() bool {
	return w.For == mesh.WaypointForService || w.For == mesh.WaypointForAll
}

// useWaypoint reads the istio.io/use-waypoint labels of an object in namespace ns.
// set is false without the label; none is true for the explicit opt-out.
func useWaypoint(objLabels map[string]string, ns string) (ref Ref, none, set bool) {
	name, ok := objLabels[mesh.LabelUseWaypoint]
	if !ok || name == "" {
		return Ref{}, false, false
	}
	if name == mesh.UseWaypointNone {
		return Ref{}, true, true
	}
	if wns := objLabels[mesh.LabelUseWaypointNamespace]; wns != "" {
		ns = wns
	}
	return Ref{Namespace: ns, Name: name}, false, true
}

// waypoints indexes the mesh's waypoints.
type waypoints struct {
	byRef map[Ref]*Waypoint
	// bySA is the legacy for-service-account index: Ref{namespace, service account}.
	bySA map[Ref]*Waypoint
}

// resolve checks that the waypoint ref exists, admits namespace ns, handles the wanted
// kind of traffic and is ready. It returns the waypoint or the reason it cannot be used.
func (ws waypoints) resolve(ref Ref, ns *corev1.Namespace, forWorkload bool) (*Waypoint, string) {
	w := ws.byRef[ref]
	if w == nil {
		return nil, ReasonWaypointNotFound
	}
	return w.check(ns, forWorkload)
}

func (w *Waypoint) check(ns *corev1.Namespace, forWorkload bool) (*Waypoint, string) {
	var nsName string
	var nsLabels map[string]string
	if ns != nil {
		nsName, nsLabels = ns.Name, ns.Labels
	}
	if !w.allowsNamespace(nsName, nsLabels) {
		return nil, ReasonWaypointNotAllowed
	}
	if forWorkload && !w.ServesWorkloads() || !forWorkload && !w.ServesServices() {
		return nil, ReasonWaypointWrongType
	}
	if !w.Ready {
		return nil, ReasonWaypointNotReady
	}
	return w, ""
}

// WorkloadWaypoint is the waypoint for traffic addressed to the pod's IP: the Pod's
// use-waypoint label, else its ServiceAccount's (or a legacy for-service-account
// Gateway), else its Namespace's. "none" at a level stops the search; a binding that
// names an unusable waypoint yields no waypoint and the reason, without falling back
// to a broader level (as Istio).
func (ws waypoints) WorkloadWaypoint(pod *corev1.Pod, sa *corev1.ServiceAccount, ns *corev1.Namespace) (*Waypoint, string) {
	if ref, none, set := useWaypoint(pod.Labels, pod.Namespace); set {
		if none {
			return nil, ""
		}
		return ws.resolve(ref, ns, true)
	}
	if sa != nil {
		if ref, none, set := useWaypoint(sa.Labels, sa.Namespace); set {
			if none {
				return nil, ""
			}
			return ws.resolve(ref, ns, true)
		}
	}
	if w := ws.bySA[Ref{Namespace: pod.Namespace, Name: serviceAccountName(pod)}]; w != nil {
		return w.check(ns, true)
	}
	if ns != nil {
		if ref, none, set := useWaypoint(ns.Labels, ns.Name); set && !none {
			return ws.resolve(ref, ns, true)
		}
	}
	return nil, ""
}

// ServiceWaypoint is the waypoint for traffic addressed to the Service: the Service's
// use-waypoint label, else its Namespace's, with the same rules as WorkloadWaypoint.
func (ws waypoints) ServiceWaypoint(svc *corev1.Service, ns *corev1.Namespace) (*Waypoint, string) {
	if ref, none, set := useWaypoint(svc.Labels, svc.Namespace); set {
		if none {
			return nil, ""
		}
		return ws.resolve(ref, ns, false)
	}
	if ns != nil {
		if ref, none, set := useWaypoint(ns.Labels, ns.Name); set && !none {
			return ws.resolve(ref, ns, false)
		}
	}
	return nil, ""
}

func serviceAccountName(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName == "" {
		return "default"
	}
	return pod.Spec.ServiceAccountName
}
