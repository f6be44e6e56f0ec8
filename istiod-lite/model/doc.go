// Package model is istiod-lite's one view of the mesh: pure functions that turn the
// Kubernetes objects users apply (Istio-compatible labels and CRDs, Gateway API) into
// workloads, services, waypoints and policies, decide which waypoint each is bound to
// (DESIGN.md 1), translate them into the xDS resources of api/workload, and scope those
// resources to what one subscriber needs. Nothing here does I/O: the informers feed an
// Inputs snapshot, Build computes a Model, and the xDS server diffs what it serves.
package model
