package deployer

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambit-mesh/ambit/api/mesh"
)

// PodConfig is the template of waypoint pods.
type PodConfig struct {
	// Image of the waypoint (ambit.local/waypoint:dev in the local cluster).
	Image string
	// PullPolicy of the image (Never in the local cluster).
	PullPolicy corev1.PullPolicy
	// Args of the waypoint container.
	Args []string
	// ControlPlane is istiod-lite's gRPC address (xDS and CA), e.g.
	// istiod-lite.istio-system.svc:15012.
	ControlPlane string
	// TrustDomain of the mesh.
	TrustDomain string
}

// Paths in waypoint pods.
const (
	TokenDir    = "/var/run/secrets/tokens"
	TokenFile   = "istio-token"
	RootCertDir = "/var/run/secrets/istio"
)

// waypointResources are the waypoint container's: Istio's waypoint
// defaults. The CPU limit also sizes the Go runtime: since Go 1.25
// GOMAXPROCS follows the container's CPU limit (rounded up, at least 2), so
// a waypoint runs 2 Ps however large its node, where without a limit it
// took one per node CPU, and each goroutine hand-off on the data path may
// wake an idle one (docs/performance.md). Istio's Envoy waypoint likewise
// runs as many workers as its CPU limit.
func waypointResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("1Gi")},
	}
}

// waypointObjects renders the ServiceAccount, Deployment and Service of a waypoint,
// each owned by its Gateway.
func waypointObjects(gw *gwv1.Gateway, pc PodConfig) (*corev1.ServiceAccount, *appsv1.Deployment, *corev1.Service) {
	lbl := map[string]string{mesh.LabelGatewayName: gw.Name, LabelManaged: ManagedValue}
	owner := []metav1.OwnerReference{{
		APIVersion: gwv1.GroupVersion.String(), Kind: "Gateway", Name: gw.Name, UID: gw.UID, Controller: ptr(true),
	}}
	meta := func() metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: gw.Name, Namespace: gw.Namespace, Labels: lbl, OwnerReferences: owner}
	}
	sa := &corev1.ServiceAccount{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}, ObjectMeta: meta()}

	podLabels := map[string]string{mesh.LabelGatewayName: gw.Name, LabelManaged: ManagedValue,
		// A waypoint speaks HBONE itself and is never captured.
		mesh.LabelDataplaneMode: mesh.DataplaneModeNone}
	env := []corev1.EnvVar{
		fieldEnv("POD_NAME", "metadata.name"), fieldEnv("POD_NAMESPACE", "metadata.namespace"),
		fieldEnv("NODE_NAME", "spec.nodeName"), fieldEnv("SERVICE_ACCOUNT", "spec.serviceAccountName"),
		fieldEnv("INSTANCE_IP", "status.podIP"),
		{Name: "GATEWAY_NAME", Value: gw.Name},
		{Name: "CONTROL_PLANE_ADDR", Value: pc.ControlPlane},
		{Name: "TRUST_DOMAIN", Value: pc.TrustDomain},
		{Name: "TOKEN_PATH", Value: TokenDir + "/" + TokenFile},
		{Name: "ROOT_CERT_PATH", Value: RootCertDir + "/root-cert.pem"},
		{Name: "XDS_NODE_ID", Value: "waypoint~" + gw.Namespace + "~" + gw.Name},
	}
	dep := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: meta(),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{mesh.LabelGatewayName: gw.Name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
				Spec: corev1.PodSpec{
					ServiceAccountName:            gw.Name,
					TerminationGracePeriodSeconds: ptr(int64(5)),
					Containers: []corev1.Container{{
						Name:            "waypoint",
						Image:           pc.Image,
						ImagePullPolicy: pc.PullPolicy,
						Args:            pc.Args,
						Env:             env,
						Resources:       waypointResources(),
						Ports: []corev1.ContainerPort{
							{Name: "hbone", ContainerPort: mesh.PortHBONE, Protocol: corev1.ProtocolTCP},
							{Name: "status-port", ContainerPort: mesh.PortHealth, Protocol: corev1.ProtocolTCP},
							{Name: "metrics", ContainerPort: 15020, Protocol: corev1.ProtocolTCP},
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz/ready", Port: intstr.FromInt32(mesh.PortHealth)}},
							PeriodSeconds: 2,
						},
						VolumeMounts: []corev1.VolumeMount{
							{Name: "istio-token", MountPath: TokenDir, ReadOnly: true},
							{Name: "istio-ca-root-cert", MountPath: RootCertDir, ReadOnly: true},
						},
					}},
					Volumes: []corev1.Volume{
						{Name: "istio-token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
							Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
								Audience: mesh.TokenAudience, ExpirationSeconds: ptr(int64(43200)), Path: TokenFile,
							}}},
						}}},
						{Name: "istio-ca-root-cert", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: RootCertConfigMap},
						}}},
					},
				},
			},
		},
	}
	svc := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: meta(),
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{mesh.LabelGatewayName: gw.Name},
			Ports: []corev1.ServicePort{
				{Name: "mesh", Port: mesh.PortHBONE, TargetPort: intstr.FromInt32(mesh.PortHBONE), Protocol: corev1.ProtocolTCP, AppProtocol: ptr("hbone")},
				{Name: "status-port", Port: mesh.PortHealth, TargetPort: intstr.FromInt32(mesh.PortHealth), Protocol: corev1.ProtocolTCP},
			},
		},
	}
	return sa, dep, svc
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}
