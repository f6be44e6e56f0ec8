// Package route is the waypoint's routing model and matcher: Gateway API
// HTTPRoute and GRPCRoute semantics (path, header, method and query matches
// with Gateway API precedence, weighted backends, header modifiers,
// redirects, URL rewrites, mirrors, timeouts and retries) in a form that an
// xDS client fills and the proxy evaluates per request.
//
// [Compile] turns the routes that apply to one destination into a [Table];
// [Table.Select] finds the rule a request takes. Routes that fail
// validation are left out with an error naming them, so one bad route never
// disturbs the others.
package route
