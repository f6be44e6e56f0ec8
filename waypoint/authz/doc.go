// Package authz evaluates Istio AuthorizationPolicy for the waypoint, with
// Istio's semantics: a matching DENY policy denies; else, if no ALLOW policy
// applies, the request is allowed; else it is allowed only if an ALLOW
// policy matches. Peer principals and namespaces come from the verified
// HBONE identity, never from headers.
//
// The model mirrors api/workload's Authorization resource (a policy matches
// when any Rule matches, a Rule when all its Clauses match, a Clause when any
// of its Matches matches, a Match when every non-empty field matches and no
// "Not" field does), plus what the waypoint needs beyond it: path templates
// ({*}, {**}) in StringMatch.
package authz
