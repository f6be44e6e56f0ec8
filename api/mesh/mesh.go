// Package mesh names the Istio-compatible labels, annotations and well-known values that
// users put on their objects and that every Ambit component reads (DESIGN.md 1). Keeping
// them here, below every component, keeps the spelling in one place.
package mesh

// Enrollment.
const (
	// LabelDataplaneMode on a Namespace or Pod enrolls it (value DataplaneModeAmbient);
	// on a Pod, DataplaneModeNone opts it out. The pod label wins.
	LabelDataplaneMode = "istio.io/dataplane-mode"
	// DataplaneModeAmbient enrolls a namespace or pod.
	DataplaneModeAmbient = "ambient"
	// DataplaneModeNone opts a pod out of a namespace's enrollment.
	DataplaneModeNone = "none"

	// AnnotationRedirection is written on a pod by the node agent (value
	// RedirectionEnabled) once its traffic is redirected to ztunnel; istiod-lite
	// advertises the pod as HBONE-capable only then.
	AnnotationRedirection = "ambient.istio.io/redirection"
	// RedirectionEnabled is the value of AnnotationRedirection for a captured pod.
	RedirectionEnabled = "enabled"
)

// Waypoints.
const (
	// LabelUseWaypoint on a Namespace, Service, Pod or ServiceAccount binds it to the
	// named waypoint Gateway; the value UseWaypointNone opts out of a broader binding.
	LabelUseWaypoint = "istio.io/use-waypoint"
	// LabelUseWaypointNamespace names the namespace of the waypoint in
	// LabelUseWaypoint when it is not the object's own.
	LabelUseWaypointNamespace = "istio.io/use-waypoint-namespace"
	// UseWaypointNone opts an object out of its parent's waypoint.
	UseWaypointNone = "none"

	// LabelWaypointFor on a waypoint Gateway (or its namespace) says which traffic it
	// handles: WaypointForService (default), WaypointForWorkload, WaypointForAll or
	// WaypointForNone.
	LabelWaypointFor = "istio.io/waypoint-for"
	// WaypointForService: traffic addressed to a Service.
	WaypointForService = "service"
	// WaypointForWorkload: traffic addressed to a pod IP.
	WaypointForWorkload = "workload"
	// WaypointForAll: both.
	WaypointForAll = "all"
	// WaypointForNone: neither (the waypoint is unused for mesh traffic).
	WaypointForNone = "none"

	// AnnotationForServiceAccount is Istio's legacy Gateway annotation binding a
	// waypoint to the pods running as that ServiceAccount in the Gateway's namespace.
	AnnotationForServiceAccount = "istio.io/for-service-account"

	// WaypointGatewayClass is the GatewayClass of waypoint Gateways.
	WaypointGatewayClass = "istio-waypoint"
	// WaypointControllerName is the controller of WaypointGatewayClass.
	WaypointControllerName = "istio.io/mesh-controller"
	// WaypointListenerName is the name of a waypoint's HBONE listener.
	WaypointListenerName = "mesh"
	// WaypointProtocol is the protocol of a waypoint's listener.
	WaypointProtocol = "HBONE"
	// LabelGatewayName is set by istiod-lite on a waypoint's pods, Deployment and
	// Service (as upstream Gateway API implementations do).
	LabelGatewayName = "gateway.networking.k8s.io/gateway-name"
)

// Ports.
const (
	// PortHBONE is where ztunnels and waypoints accept HBONE.
	PortHBONE = 15008
	// PortHealth serves /healthz/ready on every mesh proxy and istiod-lite.
	PortHealth = 15021
	// PortControlPlaneMetrics is istiod-lite's Prometheus port.
	PortControlPlaneMetrics = 15014
	// PortXDS is istiod-lite's gRPC port for xDS and the CA (plaintext gRPC, with
	// callers authenticated by ServiceAccount token, like Istio's 15010/15012).
	PortXDS = 15012
)

// Identity.
const (
	// TrustDomain is the default SPIFFE trust domain.
	TrustDomain = "cluster.local"
	// RootNamespace holds mesh-wide policies and istiod-lite.
	RootNamespace = "istio-system"
	// TokenAudience is the audience of the projected ServiceAccount tokens mesh
	// proxies present to istiod-lite.
	TokenAudience = "istio-ca"
)
