// Package workload holds the xDS resource types istiod-lite serves to ztunnels and
// waypoints (Address = Workload | Service, Authorization, Route), generated from the .proto
// files beside it, and their type URLs.
package workload

//go:generate protoc -I . --go_out=. --go_opt=paths=source_relative workload.proto authorization.proto route.proto

// Type URLs of the resources, as used in DeltaDiscoveryRequest.type_url.
const (
	// AddressType is the type URL of Address resources.
	AddressType = "type.googleapis.com/ambit.workload.v1.Address"
	// AuthorizationType is the type URL of Authorization resources.
	AuthorizationType = "type.googleapis.com/ambit.workload.v1.Authorization"
	// RouteType is the type URL of Route resources (waypoints only).
	RouteType = "type.googleapis.com/ambit.workload.v1.Route"
)
