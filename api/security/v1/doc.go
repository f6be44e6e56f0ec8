// Package v1 holds the Go types of Istio's security.istio.io/v1 API that Ambit reads:
// AuthorizationPolicy and PeerAuthentication. Their schema matches Istio's CRDs so an
// Istio user's manifests apply unchanged; the CRDs in manifests/crds are generated
// from these types; they also serve v1beta1 with the same schema, as Istio's do.
//
// +kubebuilder:object:generate=true
// +groupName=security.istio.io
package v1

//go:generate controller-gen object paths=. crd:crdVersions=v1 output:crd:artifacts:config=../../../manifests/crds
//go:generate go run ../../internal/crdversions -served v1beta1 ../../../manifests/crds/security.istio.io_authorizationpolicies.yaml ../../../manifests/crds/security.istio.io_peerauthentications.yaml
