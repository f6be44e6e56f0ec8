// Package proxy is the waypoint's data path. It accepts HBONE tunnels
// (internal/hbone), detects the protocol inside (HTTP/1.1, h2c including
// gRPC, else TCP), applies L7 authorization and Gateway API routing, picks
// a healthy endpoint and forwards the request over HBONE to the endpoint's
// ztunnel, streaming bodies both ways (WebSocket upgrades, gRPC streams
// and trailers included), with retries, timeouts and request telemetry.
//
// Configuration arrives as a model.Snapshot through [Proxy.Update], which
// compiles it and swaps it in atomically; requests in flight finish with
// the configuration they started with.
package proxy
