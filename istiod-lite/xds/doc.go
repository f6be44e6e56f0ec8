// Package xds is istiod-lite's delta xDS server: the Aggregated Discovery Service of
// Envoy's discovery protos (DeltaAggregatedResources only) serving the resource types
// of api/workload. Each subscriber gets only its view of the model (a ztunnel: what
// its node needs; a waypoint: what its bound services need), and after the first
// response only what changed. NACKs are reported and never block later updates; a
// reconnecting client sends the versions it has and gets only the difference.
//
// A subscriber names itself in DeltaDiscoveryRequest.node.id as
// "ztunnel~<node-name>" or "waypoint~<namespace>~<gateway-name>", and subscribes
// with resource_names_subscribe empty or "*" (everything in its view) and/or explicit
// resource names.
package xds
