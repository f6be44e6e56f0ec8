package route

import (
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"time"
)

// Kind is the Gateway API kind a Route came from.
type Kind uint8

// Route kinds.
const (
	KindHTTP Kind = iota // HTTPRoute
	KindGRPC             // GRPCRoute
)

func (k Kind) String() string {
	if k == KindGRPC {
		return "GRPCRoute"
	}
	return "HTTPRoute"
}

// Route is one HTTPRoute or GRPCRoute that applies to a destination.
// GRPCRoute method matches are expressed as path matches (see [GRPCMethod]).
type Route struct {
	Kind      Kind
	Namespace string
	Name      string
	// Created orders routes of equal precedence: the oldest wins, then the
	// first by "namespace/name" (Gateway API).
	Created time.Time
	// Hostnames restrict the route to requests whose Host matches one of
	// them (exact, or "*.example.com" wildcards). Empty matches any host.
	Hostnames []string
	Rules     []Rule
}

// Key returns "namespace/name", the route's name in errors and telemetry.
func (r *Route) Key() string { return r.Namespace + "/" + r.Name }

// Rule is a route rule: any of its Matches selects it, then its filters
// apply and one of its Backends receives the request.
type Rule struct {
	// Name is the optional rule name (Gateway API sectionName).
	Name string
	// Matches are alternatives; none means "any request" (path prefix /).
	Matches []Match
	// Filters apply to every request the rule takes, in this order:
	// header modifiers, rewrite or redirect, mirror.
	Filters Filters
	// Backends receive the requests in proportion to their weights. A rule
	// without backends (and without redirect) answers 500, as does one
	// whose weights are all zero (Gateway API).
	Backends []Backend
	Timeouts Timeouts
	// Retry is nil for the default policy of the proxy.
	Retry *Retry
}

// Match is one set of conditions, all of which must hold.
type Match struct {
	Path    PathMatch
	Method  string // empty matches any method
	Headers []HeaderMatch
	Query   []QueryMatch
}

// PathType is how a PathMatch compares paths.
type PathType uint8

// Path match types, ranked from least to most specific for precedence.
const (
	PathNone   PathType = iota // no path condition: matches any path
	PathRegex                  // RE2 regular expression over the whole path
	PathPrefix                 // element-wise prefix: /foo matches /foo and /foo/bar, not /foobar
	PathExact                  // the whole path
)

// PathMatch is a condition on the request path.
type PathMatch struct {
	Type  PathType
	Value string
}

// ValueType says how a header or query value is compared.
type ValueType uint8

// Value match types.
const (
	ValueExact ValueType = iota
	ValueRegex           // RE2 over the whole value
)

// HeaderMatch is a condition on a request header. Names are compared case
// insensitively; the values of a repeated header are joined with ",".
type HeaderMatch struct {
	Type  ValueType
	Name  string
	Value string
	re    *regexp.Regexp
}

// QueryMatch is a condition on a query parameter (exact name; the first
// value of a repeated parameter counts).
type QueryMatch struct {
	Type  ValueType
	Name  string
	Value string
	re    *regexp.Regexp
}

// Filters are the Gateway API filters of a rule or backend.
type Filters struct {
	RequestHeaders  HeaderModifier
	ResponseHeaders HeaderModifier
	// Redirect answers the request itself; a rule with a redirect has no
	// backends. It cannot be combined with Rewrite.
	Redirect *Redirect
	Rewrite  *Rewrite
	// Mirrors receive a copy of each request; their answers are ignored.
	Mirrors []Mirror
}

// HeaderModifier sets, adds and removes headers, in that order.
type HeaderModifier struct {
	Set    []Header
	Add    []Header
	Remove []string
}

// Header is a header name and value.
type Header struct {
	Name, Value string
}

// PathModifierType is how a redirect or rewrite changes the path.
type PathModifierType uint8

// Path modifier types.
const (
	PathKeep          PathModifierType = iota // leave the path as it is
	PathReplaceFull                           // replace the whole path
	PathReplacePrefix                         // replace the matched prefix (PathPrefix matches only)
)

// PathModifier changes the request path.
type PathModifier struct {
	Type  PathModifierType
	Value string
}

// Redirect is a RequestRedirect filter. Empty fields keep the request's.
type Redirect struct {
	Scheme   string
	Hostname string
	Path     PathModifier
	Port     uint16
	// StatusCode is 301 or 302 (the default when zero), or 303, 307, 308.
	StatusCode int
}

// Rewrite is a URLRewrite filter.
type Rewrite struct {
	Hostname string
	Path     PathModifier
}

// Mirror is a RequestMirror filter.
type Mirror struct {
	Backend Backend
	// Percent of requests mirrored, 0 to 100; 100 when zero.
	Percent float64
}

// Backend is a backendRef: a Service port of the mesh.
type Backend struct {
	Namespace, Name string
	Port            uint16
	// Weight is relative to the rule's other backends; 0 never chosen.
	// (Gateway API defaults a missing weight to 1: the converter does.)
	Weight int
	// Filters are the backendRef's own filters: header modifiers only.
	Filters Filters
	// Unresolved, when not empty, says why the backendRef does not resolve
	// (RefNotPermitted, BackendNotFound, InvalidKind): the requests its
	// weight gives it are answered 500, as the Gateway API asks, and none
	// reaches a Service of that name.
	Unresolved string
}

// Key returns "namespace/name:port".
func (b *Backend) Key() string {
	return b.Namespace + "/" + b.Name + ":" + strconv.Itoa(int(b.Port))
}

// Timeouts are the Gateway API HTTPRoute timeouts; zero means none.
type Timeouts struct {
	// Request bounds the whole exchange, retries included, from the
	// request's arrival to the end of the response.
	Request time.Duration
	// BackendRequest bounds one attempt at a backend.
	BackendRequest time.Duration
}

// RetryOn is a set of conditions that make a failed attempt retriable.
type RetryOn uint8

// Retry conditions (Envoy's names).
const (
	RetryConnectFailure RetryOn = 1 << iota // the upstream could not be reached
	RetryReset                              // the upstream reset or closed before answering
	Retry5xx                                // any 5xx answer (includes the others)
	RetryGatewayError                       // 502, 503 or 504
	RetryStatusCodes                        // a status listed in Retry.Codes
)

// MaxRetryAttempts bounds Retry.Attempts: more retries than this only
// multiply load (the retry budget bounds them anyway).
const MaxRetryAttempts = 100

// Retry is a retry policy.
type Retry struct {
	// Attempts is the number of retries after the first try, at most
	// MaxRetryAttempts.
	Attempts int
	// PerTryTimeout bounds each attempt; 0 uses Timeouts.BackendRequest.
	PerTryTimeout time.Duration
	On            RetryOn
	// Codes are the retriable statuses for RetryStatusCodes.
	Codes []int
	// Backoff is the least wait before a retry; later retries wait longer
	// (exponential, jittered, at most ten times it). 0 uses the proxy's
	// default.
	Backoff time.Duration
}

// GatewayRetry is the policy of an HTTPRoute rule's retry stanza, as Istio
// applies it: retried on connection failures and resets (the Gateway API
// asks for both, and a per-try timeout counts as a reset) and on the
// listed status codes.
func GatewayRetry(attempts int, codes []int, backoff time.Duration) *Retry {
	return &Retry{
		Attempts: attempts,
		On:       RetryConnectFailure | RetryReset | RetryStatusCodes,
		Codes:    codes,
		Backoff:  backoff,
	}
}

// Retriable reports whether an attempt that answered status (0 when it did
// not answer) is worth retrying under p. connectFailure means the upstream
// could not be reached; reset that it reset, closed or timed out before
// answering. As in Envoy, 5xx and gateway-error cover both.
func (p *Retry) Retriable(status int, connectFailure, reset bool) bool {
	const unanswered = Retry5xx | RetryGatewayError
	switch {
	case p == nil:
		return false
	case connectFailure:
		return p.On&(RetryConnectFailure|unanswered) != 0
	case reset:
		return p.On&(RetryReset|unanswered) != 0
	case status >= 500 && p.On&Retry5xx != 0:
		return true
	case (status == http.StatusBadGateway || status == http.StatusServiceUnavailable ||
		status == http.StatusGatewayTimeout) && p.On&RetryGatewayError != 0:
		return true
	case p.On&RetryStatusCodes != 0:
		return slices.Contains(p.Codes, status)
	}
	return false
}

// DefaultRetry is Istio's default for mesh traffic: two retries on
// connection failures, refused streams and 503.
func DefaultRetry() *Retry {
	return &Retry{
		Attempts: 2,
		On:       RetryConnectFailure | RetryStatusCodes,
		Codes:    []int{http.StatusServiceUnavailable},
	}
}
