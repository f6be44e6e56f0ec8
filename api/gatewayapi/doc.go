// Package gatewayapi vendors the Gateway API CRDs Ambit installs: the standard channel
// of the sigs.k8s.io/gateway-api version in go.mod, copied unchanged from that module
// into manifests/crds/gateway-api.yaml by `make generate` so go.mod and the installed
// CRDs never disagree.
package gatewayapi

//go:generate sh vendor-crds.sh ../../manifests/crds/gateway-api.yaml
