package model

import (
	"fmt"
	"regexp"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambit-mesh/ambit/api/workload"
)

// RouteName is the xDS resource name of a route: "<kind>/<namespace>/<name>".
func RouteName(kind string, ref Ref) string { return kind + "/" + ref.Namespace + "/" + ref.Name }

// maxRetryAttempts is the most retries a rule may ask for: the waypoint's limit
// (waypoint/route.MaxRetryAttempts); its retry budget bounds them anyway.
const maxRetryAttempts = 100

// defaultRetryAttempts is what Istio uses when a retry stanza does not say.
const defaultRetryAttempts = 2

// translation is a route translated for waypoints (without its parents), with
// what its status needs.
type translation struct {
	proto *workload.Route
	// invalid, when set, is why the route cannot be applied as written; reason is
	// the Gateway API reason for its Accepted condition.
	invalid string
	reason  gwv1.RouteConditionReason
	// unresolved are the backendRefs that do not resolve, for ResolvedRefs: they
	// are sent marked (their share of requests is answered 500), or left out for
	// mirrors.
	unresolved []backendProblem
}

type backendProblem struct {
	reason  gwv1.RouteConditionReason
	message string
}

// translator translates one route, collecting its problems.
type translator struct {
	m     *Model
	kind  string // KindHTTPRoute or KindGRPCRoute
	ns    string
	where string // the rule being translated, for messages
	out   translation
}

// fail records that the route is invalid; the first problem is reported.
func (t *translator) fail(reason gwv1.RouteConditionReason, format string, args ...any) {
	if t.out.invalid == "" {
		t.out.invalid, t.out.reason = t.where+": "+fmt.Sprintf(format, args...), reason
	}
}

func ruleWhere(i int, name *gwv1.SectionName) string {
	if name != nil {
		return fmt.Sprintf("rule %d (%s)", i, *name)
	}
	return "rule " + strconv.Itoa(i)
}

// translateHTTPRoute translates an HTTPRoute.
func (m *Model) translateHTTPRoute(r *gwv1.HTTPRoute) translation {
	t := &translator{m: m, kind: KindHTTPRoute, ns: r.Namespace}
	out := routeHeader(workload.RouteKind_HTTP_ROUTE, r.ObjectMeta, r.Spec.Hostnames)
	for i, rule := range r.Spec.Rules {
		t.where = ruleWhere(i, rule.Name)
		pr := &workload.RouteRule{Filters: t.httpFilters(rule.Filters)}
		if rule.Name != nil {
			pr.Name = string(*rule.Name)
		}
		for _, m := range rule.Matches {
			pr.Matches = append(pr.Matches, t.httpMatch(m))
		}
		for _, b := range rule.BackendRefs {
			if pb := t.backend(b.BackendObjectReference, b.Weight); pb != nil {
				pb.Filters = t.httpFilters(b.Filters)
				pr.Backends = append(pr.Backends, pb)
			}
		}
		if to := rule.Timeouts; to != nil {
			pr.RequestTimeoutNanos = t.duration("timeouts.request", to.Request)
			pr.BackendRequestTimeoutNanos = t.duration("timeouts.backendRequest", to.BackendRequest)
			if pr.RequestTimeoutNanos > 0 && pr.BackendRequestTimeoutNanos > pr.RequestTimeoutNanos {
				t.fail(gwv1.RouteReasonUnsupportedValue, "timeouts.backendRequest %s exceeds timeouts.request %s", *to.BackendRequest, *to.Request)
			}
		}
		pr.Retry = t.retry(rule.Retry)
		out.Rules = append(out.Rules, pr)
	}
	t.out.proto = out
	return t.out
}

func (t *translator) httpMatch(m gwv1.HTTPRouteMatch) *workload.RouteMatch {
	pm := &workload.RouteMatch{}
	if m.Path != nil {
		pm.PathType, pm.Path = workload.PathMatchType_PATH_PREFIX, "/"
		if m.Path.Type != nil {
			switch *m.Path.Type {
			case gwv1.PathMatchExact:
				pm.PathType = workload.PathMatchType_PATH_EXACT
			case gwv1.PathMatchRegularExpression:
				pm.PathType = workload.PathMatchType_PATH_REGEX
			}
		}
		if m.Path.Value != nil {
			pm.Path = *m.Path.Value
		}
		if pm.PathType == workload.PathMatchType_PATH_REGEX {
			t.regex("path", pm.Path)
		}
	}
	if m.Method != nil {
		pm.Method = string(*m.Method)
	}
	for _, h := range m.Headers {
		regex := h.Type != nil && *h.Type == gwv1.HeaderMatchRegularExpression
		if regex {
			t.regex("header "+string(h.Name), h.Value)
		}
		pm.Headers = append(pm.Headers, &workload.ValueMatch{Name: string(h.Name), Value: h.Value, Regex: regex})
	}
	for _, q := range m.QueryParams {
		regex := q.Type != nil && *q.Type == gwv1.QueryParamMatchRegularExpression
		if regex {
			t.regex("query parameter "+string(q.Name), q.Value)
		}
		pm.QueryParams = append(pm.QueryParams, &workload.ValueMatch{Name: string(q.Name), Value: q.Value, Regex: regex})
	}
	return pm
}

// regex checks a RegularExpression match: the waypoint evaluates RE2 (Go regexp)
// over the whole value.
func (t *translator) regex(what, re string) {
	if _, err := regexp.Compile(re); err != nil {
		t.fail(gwv1.RouteReasonUnsupportedValue, "%s regular expression %q: %v", what, re, err)
	}
}

// translateGRPCRoute translates a GRPCRoute.
func (m *Model) translateGRPCRoute(r *gwv1.GRPCRoute) translation {
	t := &translator{m: m, kind: KindGRPCRoute, ns: r.Namespace}
	out := routeHeader(workload.RouteKind_GRPC_ROUTE, r.ObjectMeta, r.Spec.Hostnames)
	for i, rule := range r.Spec.Rules {
		t.where = ruleWhere(i, rule.Name)
		pr := &workload.RouteRule{Filters: t.grpcFilters(rule.Filters)}
		if rule.Name != nil {
			pr.Name = string(*rule.Name)
		}
		for _, m := range rule.Matches {
			pm := &workload.RouteMatch{}
			if mm := m.Method; mm != nil {
				g := &workload.GRPCMethodMatch{Regex: mm.Type != nil && *mm.Type == gwv1.GRPCMethodMatchRegularExpression}
				if mm.Service != nil {
					g.Service = *mm.Service
				}
				if mm.Method != nil {
					g.Method = *mm.Method
				}
				if g.Regex {
					t.regex("method service", g.Service)
					t.regex("method", g.Method)
				}
				pm.Grpc = g
			}
			for _, h := range m.Headers {
				regex := h.Type != nil && *h.Type == gwv1.GRPCHeaderMatchRegularExpression
				if regex {
					t.regex("header "+string(h.Name), h.Value)
				}
				pm.Headers = append(pm.Headers, &workload.ValueMatch{Name: string(h.Name), Value: h.Value, Regex: regex})
			}
			pr.Matches = append(pr.Matches, pm)
		}
		for _, b := range rule.BackendRefs {
			if pb := t.backend(b.BackendObjectReference, b.Weight); pb != nil {
				pb.Filters = t.grpcFilters(b.Filters)
				pr.Backends = append(pr.Backends, pb)
			}
		}
		out.Rules = append(out.Rules, pr)
	}
	t.out.proto = out
	return t.out
}

func routeHeader(kind workload.RouteKind, meta metav1.ObjectMeta, hostnames []gwv1.Hostname) *workload.Route {
	out := &workload.Route{Kind: kind, Namespace: meta.Namespace, Name: meta.Name}
	if !meta.CreationTimestamp.IsZero() {
		out.CreatedUnixNanos = meta.CreationTimestamp.UnixNano()
	}
	for _, h := range hostnames {
		out.Hostnames = append(out.Hostnames, string(h))
	}
	return out
}

// backend translates a backendRef; Gateway API defaults a missing weight to 1. A
// ref that does not resolve is kept, marked, so that its share of the requests is
// answered 500 (Gateway API), and recorded for ResolvedRefs.
func (t *translator) backend(b gwv1.BackendObjectReference, weight *int32) *workload.RouteBackend {
	out := &workload.RouteBackend{Namespace: t.ns, Name: string(b.Name), Weight: 1}
	if b.Namespace != nil {
		out.Namespace = string(*b.Namespace)
	}
	if b.Port != nil {
		out.Port = uint32(*b.Port) //nolint:gosec // PortNumber is 1..65535 (CRD validation).
	}
	if weight != nil && *weight >= 0 {
		out.Weight = uint32(*weight)
	}
	if reason, problem := t.m.backendProblem(t.kind, t.ns, b); problem != "" {
		out.Unresolved = string(reason) + ": " + problem
		t.out.unresolved = append(t.out.unresolved, backendProblem{reason: reason, message: problem})
	}
	return out
}

// backendProblem says why a backendRef of a route of kind in namespace ns does not
// resolve, with the Gateway API reason; empty when it does.
func (m *Model) backendProblem(kind, ns string, b gwv1.BackendObjectReference) (gwv1.RouteConditionReason, string) {
	if (b.Group != nil && *b.Group != "" && *b.Group != "core") || (b.Kind != nil && *b.Kind != "Service") {
		return gwv1.RouteReasonInvalidKind, fmt.Sprintf("backend %s: only Services are supported", b.Name)
	}
	bns := ns
	if b.Namespace != nil {
		bns = string(*b.Namespace)
	}
	// Permission first: without it, whether the Service exists is not the route's
	// business.
	if !m.grants.allowsService(kind, ns, bns, string(b.Name)) {
		return gwv1.RouteReasonRefNotPermitted, fmt.Sprintf("backend Service %s/%s: no ReferenceGrant in namespace %s allows %ss from namespace %s to refer to it",
			bns, b.Name, bns, kind, ns)
	}
	if m.Services[bns+"/"+string(b.Name)+"."+bns+".svc."+m.DomainSuffix] == nil {
		return gwv1.RouteReasonBackendNotFound, fmt.Sprintf("backend Service %s/%s not found", bns, b.Name)
	}
	return "", ""
}

// duration converts a Gateway API duration (CRD-validated, a subset of Go's).
func (t *translator) duration(what string, d *gwv1.Duration) int64 {
	if d == nil {
		return 0
	}
	v, err := time.ParseDuration(string(*d))
	if err != nil || v < 0 {
		t.fail(gwv1.RouteReasonUnsupportedValue, "%s %q is not a duration", what, *d)
		return 0
	}
	return int64(v)
}

// retry translates a rule's retry stanza as Istio does: attempts default to 2,
// codes and backoff as given; connection failures and resets are always retried
// (the waypoint's GatewayRetry). The backendRequest timeout bounds each attempt.
func (t *translator) retry(r *gwv1.HTTPRouteRetry) *workload.RouteRetry {
	if r == nil {
		return nil
	}
	out := &workload.RouteRetry{Attempts: defaultRetryAttempts, BackoffNanos: t.duration("retry.backoff", r.Backoff)}
	if r.Attempts != nil {
		if *r.Attempts < 0 || *r.Attempts > maxRetryAttempts {
			t.fail(gwv1.RouteReasonUnsupportedValue, "retry.attempts %d not in [0, %d]", *r.Attempts, maxRetryAttempts)
			return nil
		}
		out.Attempts = uint32(*r.Attempts) //nolint:gosec // checked above.
	}
	for _, c := range r.Codes {
		if c < 400 || c > 599 {
			t.fail(gwv1.RouteReasonUnsupportedValue, "retry.codes: %d is not an HTTP error status (400-599)", c)
			return nil
		}
		out.Codes = append(out.Codes, uint32(c)) //nolint:gosec // checked above.
	}
	return out
}

func (t *translator) httpFilters(in []gwv1.HTTPRouteFilter) *workload.RouteFilters {
	if len(in) == 0 {
		return nil
	}
	out := &workload.RouteFilters{}
	for _, f := range in {
		switch f.Type {
		case gwv1.HTTPRouteFilterRequestHeaderModifier:
			out.RequestHeaders = headerModifier(f.RequestHeaderModifier)
		case gwv1.HTTPRouteFilterResponseHeaderModifier:
			out.ResponseHeaders = headerModifier(f.ResponseHeaderModifier)
		case gwv1.HTTPRouteFilterRequestRedirect:
			if r := f.RequestRedirect; r != nil {
				rd := &workload.RouteRedirect{Path: pathModifier(r.Path)}
				if r.Scheme != nil {
					rd.Scheme = *r.Scheme
				}
				if r.Hostname != nil {
					rd.Hostname = string(*r.Hostname)
				}
				if r.Port != nil {
					rd.Port = uint32(*r.Port) //nolint:gosec // PortNumber is 1..65535.
				}
				if r.StatusCode != nil && *r.StatusCode > 0 {
					rd.StatusCode = uint32(*r.StatusCode)
				}
				out.Redirect = rd
			}
		case gwv1.HTTPRouteFilterURLRewrite:
			if r := f.URLRewrite; r != nil {
				rw := &workload.RouteRewrite{Path: pathModifier(r.Path)}
				if r.Hostname != nil {
					rw.Hostname = string(*r.Hostname)
				}
				out.Rewrite = rw
			}
		case gwv1.HTTPRouteFilterRequestMirror:
			if m := t.mirror(f.RequestMirror); m != nil {
				out.Mirrors = append(out.Mirrors, m)
			}
		default:
			// Skipping a filter would change what the route does (Gateway API).
			t.fail(gwv1.RouteReasonUnsupportedValue, "filter type %s is not supported", f.Type)
		}
	}
	if out.Redirect != nil && out.Rewrite != nil {
		t.fail(gwv1.RouteReasonIncompatibleFilters, "RequestRedirect and URLRewrite cannot be combined")
	}
	return out
}

func (t *translator) grpcFilters(in []gwv1.GRPCRouteFilter) *workload.RouteFilters {
	if len(in) == 0 {
		return nil
	}
	out := &workload.RouteFilters{}
	for _, f := range in {
		switch f.Type {
		case gwv1.GRPCRouteFilterRequestHeaderModifier:
			out.RequestHeaders = headerModifier(f.RequestHeaderModifier)
		case gwv1.GRPCRouteFilterResponseHeaderModifier:
			out.ResponseHeaders = headerModifier(f.ResponseHeaderModifier)
		case gwv1.GRPCRouteFilterRequestMirror:
			if m := t.mirror(f.RequestMirror); m != nil {
				out.Mirrors = append(out.Mirrors, m)
			}
		default:
			t.fail(gwv1.RouteReasonUnsupportedValue, "filter type %s is not supported", f.Type)
		}
	}
	return out
}

// mirror translates a RequestMirror filter; one whose backend does not resolve is
// left out (nothing is sent to it) and reported in ResolvedRefs.
func (t *translator) mirror(m *gwv1.HTTPRequestMirrorFilter) *workload.RouteMirror {
	if m == nil {
		return nil
	}
	b := t.backend(m.BackendRef, nil)
	if b.Unresolved != "" {
		return nil
	}
	out := &workload.RouteMirror{Backend: b}
	switch {
	case m.Percent != nil:
		out.Percent = float64(*m.Percent)
	case m.Fraction != nil && m.Fraction.Denominator != nil && *m.Fraction.Denominator > 0:
		out.Percent = 100 * float64(m.Fraction.Numerator) / float64(*m.Fraction.Denominator)
	case m.Fraction != nil:
		out.Percent = float64(m.Fraction.Numerator)
	}
	return out
}

func headerModifier(f *gwv1.HTTPHeaderFilter) *workload.HeaderModifier {
	if f == nil {
		return nil
	}
	out := &workload.HeaderModifier{Remove: f.Remove}
	for _, h := range f.Set {
		out.Set = append(out.Set, &workload.RouteHeader{Name: string(h.Name), Value: h.Value})
	}
	for _, h := range f.Add {
		out.Add = append(out.Add, &workload.RouteHeader{Name: string(h.Name), Value: h.Value})
	}
	return out
}

func pathModifier(p *gwv1.HTTPPathModifier) *workload.PathModifier {
	switch {
	case p == nil:
		return nil
	case p.Type == gwv1.FullPathHTTPPathModifier && p.ReplaceFullPath != nil:
		return &workload.PathModifier{Type: workload.PathModifierType_PATH_REPLACE_FULL, Value: *p.ReplaceFullPath}
	case p.Type == gwv1.PrefixMatchHTTPPathModifier && p.ReplacePrefixMatch != nil:
		return &workload.PathModifier{Type: workload.PathModifierType_PATH_REPLACE_PREFIX, Value: *p.ReplacePrefixMatch}
	}
	return nil
}
