// Package telemetry is what ztunnel shows operators: Prometheus metrics
// with Istio's names and labels and one access log line per connection
// (Recorder, an adapter over the proxy's connection events), readiness
// (/healthz/ready once configuration and the node agent's snapshot are in)
// and the admin config dump (workloads, services, policies, pods and
// certificates as JSON), with the HTTP servers that serve them.
package telemetry
