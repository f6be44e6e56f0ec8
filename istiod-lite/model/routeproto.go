package model

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambit-mesh/ambit/api/workload"
)

// RouteName is the xDS resource name of a route: "<kind>/<namespace>/<name>".
func RouteName(kind string, ref Ref) string { return kind + "/" + ref.Namespace + "/" + ref.Name }

// acceptedParents are the parents of st a waypoint applies the route for.
func acceptedParents(st RouteStatus) []*workload.RouteParent {
	var out []*workload.RouteParent
	for _, p := range st.Parents {
		if !metaTrue(p.Conditions, string(gwv1.RouteConditionAccepted)) {
			continue
		}
		kind := "Gateway"
		if p.ParentRef.Kind != nil {
			kind = string(*p.ParentRef.Kind)
		}
		ns := ""
		if p.ParentRef.Namespace != nil {
			ns = string(*p.ParentRef.Namespace)
		}
		rp := &workload.RouteParent{Kind: kind, Namespace: ns, Name: string(p.ParentRef.Name)}
		if p.ParentRef.Port != nil {
			rp.Port = uint32(*p.ParentRef.Port) //nolint:gosec // PortNumber is 1..65535 (CRD validation).
		}
		out = append(out, rp)
	}
	return out
}

func metaTrue(conds []metav1.Condition, t string) bool {
	for _, c := range conds {
		if c.Type == t {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}

// httpRouteProto translates an HTTPRoute for waypoints; parents default their
// namespace to the route's.
func httpRouteProto(r *gwv1.HTTPRoute, parents []*workload.RouteParent) *workload.Route {
	out := routeHeader(workload.RouteKind_HTTP_ROUTE, r.ObjectMeta, parents, r.Spec.Hostnames)
	for _, rule := range r.Spec.Rules {
		pr := &workload.RouteRule{Filters: httpFilters(r.Namespace, rule.Filters)}
		if rule.Name != nil {
			pr.Name = string(*rule.Name)
		}
		for _, m := range rule.Matches {
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
			}
			if m.Method != nil {
				pm.Method = string(*m.Method)
			}
			for _, h := range m.Headers {
				pm.Headers = append(pm.Headers, &workload.ValueMatch{Name: string(h.Name), Value: h.Value,
					Regex: h.Type != nil && *h.Type == gwv1.HeaderMatchRegularExpression})
			}
			for _, q := range m.QueryParams {
				pm.QueryParams = append(pm.QueryParams, &workload.ValueMatch{Name: string(q.Name), Value: q.Value,
					Regex: q.Type != nil && *q.Type == gwv1.QueryParamMatchRegularExpression})
			}
			pr.Matches = append(pr.Matches, pm)
		}
		for _, b := range rule.BackendRefs {
			pb := backendProto(r.Namespace, b.BackendObjectReference, b.Weight)
			pb.Filters = httpFilters(r.Namespace, b.Filters)
			pr.Backends = append(pr.Backends, pb)
		}
		if t := rule.Timeouts; t != nil {
			pr.RequestTimeoutNanos = durationNanos(t.Request)
			pr.BackendRequestTimeoutNanos = durationNanos(t.BackendRequest)
		}
		out.Rules = append(out.Rules, pr)
	}
	return out
}

// grpcRouteProto translates a GRPCRoute for waypoints.
func grpcRouteProto(r *gwv1.GRPCRoute, parents []*workload.RouteParent) *workload.Route {
	out := routeHeader(workload.RouteKind_GRPC_ROUTE, r.ObjectMeta, parents, r.Spec.Hostnames)
	for _, rule := range r.Spec.Rules {
		pr := &workload.RouteRule{Filters: grpcFilters(r.Namespace, rule.Filters)}
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
				pm.Grpc = g
			}
			for _, h := range m.Headers {
				pm.Headers = append(pm.Headers, &workload.ValueMatch{Name: string(h.Name), Value: h.Value,
					Regex: h.Type != nil && *h.Type == gwv1.GRPCHeaderMatchRegularExpression})
			}
			pr.Matches = append(pr.Matches, pm)
		}
		for _, b := range rule.BackendRefs {
			pb := backendProto(r.Namespace, b.BackendObjectReference, b.Weight)
			pb.Filters = grpcFilters(r.Namespace, b.Filters)
			pr.Backends = append(pr.Backends, pb)
		}
		out.Rules = append(out.Rules, pr)
	}
	return out
}

func routeHeader(kind workload.RouteKind, meta metav1.ObjectMeta, parents []*workload.RouteParent, hostnames []gwv1.Hostname) *workload.Route {
	out := &workload.Route{Kind: kind, Namespace: meta.Namespace, Name: meta.Name, CreatedUnixNanos: meta.CreationTimestamp.UnixNano()}
	for _, p := range parents {
		if p.Namespace == "" {
			p.Namespace = meta.Namespace
		}
		out.Parents = append(out.Parents, p)
	}
	for _, h := range hostnames {
		out.Hostnames = append(out.Hostnames, string(h))
	}
	return out
}

// backendProto translates a backendRef; Gateway API defaults a missing weight to 1.
func backendProto(ns string, b gwv1.BackendObjectReference, weight *int32) *workload.RouteBackend {
	out := &workload.RouteBackend{Namespace: ns, Name: string(b.Name), Weight: 1}
	if b.Namespace != nil {
		out.Namespace = string(*b.Namespace)
	}
	if b.Port != nil {
		out.Port = uint32(*b.Port) //nolint:gosec // PortNumber is 1..65535 (CRD validation).
	}
	if weight != nil && *weight >= 0 {
		out.Weight = uint32(*weight)
	}
	return out
}

func durationNanos(d *gwv1.Duration) int64 {
	if d == nil {
		return 0
	}
	v, err := time.ParseDuration(string(*d))
	if err != nil {
		return 0
	}
	return int64(v)
}

func httpFilters(ns string, in []gwv1.HTTPRouteFilter) *workload.RouteFilters {
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
			if m := f.RequestMirror; m != nil {
				out.Mirrors = append(out.Mirrors, mirror(ns, m))
			}
		}
	}
	return out
}

func grpcFilters(ns string, in []gwv1.GRPCRouteFilter) *workload.RouteFilters {
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
			if m := f.RequestMirror; m != nil {
				out.Mirrors = append(out.Mirrors, mirror(ns, m))
			}
		}
	}
	return out
}

func mirror(ns string, m *gwv1.HTTPRequestMirrorFilter) *workload.RouteMirror {
	out := &workload.RouteMirror{Backend: backendProto(ns, m.BackendRef, nil)}
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
