package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of Istio's security resources.
const GroupName = "security.istio.io"

// SchemeGroupVersion is the group and version of the types in this package.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1"}

// Resource names of the types in this package, as used in REST paths and RBAC rules.
const (
	ResourceAuthorizationPolicies = "authorizationpolicies"
	ResourcePeerAuthentications   = "peerauthentications"
)

// AddToScheme registers the types of this package with a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion,
		&AuthorizationPolicy{}, &AuthorizationPolicyList{},
		&PeerAuthentication{}, &PeerAuthenticationList{},
	)
	metav1.AddToGroupVersion(s, SchemeGroupVersion)
	return nil
}
