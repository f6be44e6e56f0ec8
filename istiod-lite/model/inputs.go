package model

import (
	corev1 "k8s.io/api/core/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	securityv1 "github.com/ambit-mesh/ambit/api/security/v1"
)

// Inputs is a consistent snapshot of the Kubernetes objects the model is built from.
// Build never modifies them.
type Inputs struct {
	// TrustDomain of every identity; empty means cluster.local.
	TrustDomain string
	// RootNamespace holds mesh-wide policies; empty means istio-system.
	RootNamespace string
	// ClusterID names the cluster in workload uids; empty means Kubernetes.
	ClusterID string
	// DomainSuffix of service hostnames; empty means cluster.local.
	DomainSuffix string

	Namespaces            []*corev1.Namespace
	Pods                  []*corev1.Pod
	Services              []*corev1.Service
	ServiceAccounts       []*corev1.ServiceAccount
	Gateways              []*gwv1.Gateway
	AuthorizationPolicies []*securityv1.AuthorizationPolicy
	PeerAuthentications   []*securityv1.PeerAuthentication
	HTTPRoutes            []*gwv1.HTTPRoute
	GRPCRoutes            []*gwv1.GRPCRoute
	// ReferenceGrants permit routes to send to Services in other namespaces.
	ReferenceGrants []*gwv1beta1.ReferenceGrant
}

// Ref names a namespaced object.
type Ref struct {
	Namespace string
	Name      string
}

// String is "namespace/name", the form used in resource names and logs.
func (r Ref) String() string { return r.Namespace + "/" + r.Name }

func (in *Inputs) withDefaults() Inputs {
	out := *in
	if out.TrustDomain == "" {
		out.TrustDomain = "cluster.local"
	}
	if out.RootNamespace == "" {
		out.RootNamespace = "istio-system"
	}
	if out.ClusterID == "" {
		out.ClusterID = "Kubernetes"
	}
	if out.DomainSuffix == "" {
		out.DomainSuffix = "cluster.local"
	}
	return out
}
