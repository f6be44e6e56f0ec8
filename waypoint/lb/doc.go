// Package lb balances requests over a destination's endpoints (round robin
// or least request) and ejects misbehaving endpoints for a while (outlier
// detection with Envoy's semantics: consecutive errors eject a host for
// base ejection time times the number of times it was ejected, at most a
// share of the pool is ejected at once).
package lb
