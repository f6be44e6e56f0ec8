// Package telemetry is the waypoint's request telemetry: Istio's standard
// Prometheus metrics (reporter="waypoint"), one access log line per
// request, and OpenTelemetry spans with W3C trace context propagation.
package telemetry
