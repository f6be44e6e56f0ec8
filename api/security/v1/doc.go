// Package v1 holds the Go types of Istio's security.istio.io/v1 API that Ambit reads:
// AuthorizationPolicy and PeerAuthentication. Their schema matches Istio's CRDs so an
// Istio user's manifests apply unchanged; the CRDs in manifests/crds are generated
// from these types.
//
// +kubebuilder:object:generate=true
// +groupName=security.istio.io
package v1

//go:generate controller-gen object paths=. crd:crdVersions=v1 output:crd:artifacts:config=../../../manifests/crds
