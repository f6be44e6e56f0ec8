package xds

import (
	"errors"
	"fmt"
	"time"

	"github.com/ambit-mesh/ambit/api/workload"
	"github.com/ambit-mesh/ambit/waypoint/model"
	"github.com/ambit-mesh/ambit/waypoint/route"
)

// Route converts a Route resource. Only what cannot be represented is an
// error here; the proxy validates the rest (regexes, filter combinations)
// when it compiles the snapshot.
func Route(r *workload.Route) (model.Route, error) {
	out := model.Route{Route: route.Route{
		Kind: route.KindHTTP, Namespace: r.GetNamespace(), Name: r.GetName(),
		Hostnames: r.GetHostnames(),
	}}
	if r.GetKind() == workload.RouteKind_GRPC_ROUTE {
		out.Kind = route.KindGRPC
	}
	if out.Name == "" || out.Namespace == "" {
		return out, fmt.Errorf("route %q: no name or namespace", r.GetName())
	}
	if why := r.GetInvalid(); why != "" {
		return out, fmt.Errorf("%s %s: rejected by the control plane: %s", out.Kind, out.Key(), why)
	}
	if n := r.GetCreatedUnixNanos(); n != 0 {
		out.Created = time.Unix(0, n).UTC()
	}
	for _, p := range r.GetParents() {
		pp, err := port(p.GetPort())
		if err != nil {
			return out, fmt.Errorf("route %s parent %s: %w", out.Key(), p.GetName(), err)
		}
		out.Parents = append(out.Parents, model.Ref{Kind: p.GetKind(), Namespace: p.GetNamespace(), Name: p.GetName(), Port: pp})
	}
	for i, pr := range r.GetRules() {
		rule, err := routeRule(out.Kind, pr)
		if err != nil {
			return out, fmt.Errorf("%s %s rule %d: %w", out.Kind, out.Key(), i, err)
		}
		out.Rules = append(out.Rules, rule)
	}
	return out, nil
}

func routeRule(kind route.Kind, pr *workload.RouteRule) (route.Rule, error) {
	rule := route.Rule{Name: pr.GetName()}
	if pr.GetRequestTimeoutNanos() < 0 || pr.GetBackendRequestTimeoutNanos() < 0 {
		return rule, errors.New("negative timeout")
	}
	rule.Timeouts = route.Timeouts{
		Request:        time.Duration(pr.GetRequestTimeoutNanos()),
		BackendRequest: time.Duration(pr.GetBackendRequestTimeoutNanos()),
	}
	if rr := pr.GetRetry(); rr != nil {
		codes := make([]int, 0, len(rr.GetCodes()))
		for _, c := range rr.GetCodes() {
			codes = append(codes, int(c))
		}
		rule.Retry = route.GatewayRetry(int(rr.GetAttempts()), codes, time.Duration(rr.GetBackoffNanos()))
	}
	for _, pm := range pr.GetMatches() {
		m := route.Match{Method: pm.GetMethod()}
		switch pm.GetPathType() {
		case workload.PathMatchType_PATH_EXACT:
			m.Path = route.PathMatch{Type: route.PathExact, Value: pm.GetPath()}
		case workload.PathMatchType_PATH_PREFIX:
			m.Path = route.PathMatch{Type: route.PathPrefix, Value: pm.GetPath()}
		case workload.PathMatchType_PATH_REGEX:
			m.Path = route.PathMatch{Type: route.PathRegex, Value: pm.GetPath()}
		}
		if g := pm.GetGrpc(); g != nil {
			if kind != route.KindGRPC {
				return rule, errors.New("gRPC method match in an HTTPRoute")
			}
			m.Path = route.GRPCMethod(g.GetService(), g.GetMethod(), g.GetRegex())
		}
		for _, h := range pm.GetHeaders() {
			m.Headers = append(m.Headers, route.HeaderMatch{Type: valueType(h), Name: h.GetName(), Value: h.GetValue()})
		}
		for _, q := range pm.GetQueryParams() {
			m.Query = append(m.Query, route.QueryMatch{Type: valueType(q), Name: q.GetName(), Value: q.GetValue()})
		}
		rule.Matches = append(rule.Matches, m)
	}
	var err error
	if rule.Filters, err = routeFilters(pr.GetFilters()); err != nil {
		return rule, err
	}
	for _, pb := range pr.GetBackends() {
		b, err := routeBackend(pb)
		if err != nil {
			return rule, err
		}
		rule.Backends = append(rule.Backends, b)
	}
	return rule, nil
}

func valueType(v *workload.ValueMatch) route.ValueType {
	if v.GetRegex() {
		return route.ValueRegex
	}
	return route.ValueExact
}

func routeBackend(pb *workload.RouteBackend) (route.Backend, error) {
	b := route.Backend{Namespace: pb.GetNamespace(), Name: pb.GetName(), Unresolved: pb.GetUnresolved()}
	p, err := port(pb.GetPort())
	if err != nil {
		return b, fmt.Errorf("backend %s/%s: %w", b.Namespace, b.Name, err)
	}
	b.Port = p
	if pb.GetWeight() > 1_000_000 {
		return b, fmt.Errorf("backend %s/%s: weight %d over 1000000", b.Namespace, b.Name, pb.GetWeight())
	}
	b.Weight = int(pb.GetWeight())
	if b.Filters, err = routeFilters(pb.GetFilters()); err != nil {
		return b, err
	}
	return b, nil
}

func routeFilters(pf *workload.RouteFilters) (route.Filters, error) {
	var f route.Filters
	if pf == nil {
		return f, nil
	}
	f.RequestHeaders = headerModifier(pf.GetRequestHeaders())
	f.ResponseHeaders = headerModifier(pf.GetResponseHeaders())
	if rd := pf.GetRedirect(); rd != nil {
		p, err := optionalPort(rd.GetPort())
		if err != nil {
			return f, fmt.Errorf("redirect: %w", err)
		}
		f.Redirect = &route.Redirect{Scheme: rd.GetScheme(), Hostname: rd.GetHostname(), Path: pathModifier(rd.GetPath()),
			Port: p, StatusCode: int(rd.GetStatusCode())}
	}
	if rw := pf.GetRewrite(); rw != nil {
		f.Rewrite = &route.Rewrite{Hostname: rw.GetHostname(), Path: pathModifier(rw.GetPath())}
	}
	for _, m := range pf.GetMirrors() {
		if m.GetPercent() < 0 || m.GetPercent() > 100 {
			return f, fmt.Errorf("mirror percent %v out of 0..100", m.GetPercent())
		}
		b, err := routeBackend(m.GetBackend())
		if err != nil {
			return f, fmt.Errorf("mirror: %w", err)
		}
		f.Mirrors = append(f.Mirrors, route.Mirror{Backend: b, Percent: m.GetPercent()})
	}
	return f, nil
}

// optionalPort is port where 0 means unset.
func optionalPort(p uint32) (uint16, error) {
	if p == 0 {
		return 0, nil
	}
	return port(p)
}

func headerModifier(h *workload.HeaderModifier) route.HeaderModifier {
	var out route.HeaderModifier
	for _, s := range h.GetSet() {
		out.Set = append(out.Set, route.Header{Name: s.GetName(), Value: s.GetValue()})
	}
	for _, a := range h.GetAdd() {
		out.Add = append(out.Add, route.Header{Name: a.GetName(), Value: a.GetValue()})
	}
	out.Remove = h.GetRemove()
	return out
}

func pathModifier(p *workload.PathModifier) route.PathModifier {
	switch p.GetType() {
	case workload.PathModifierType_PATH_REPLACE_FULL:
		return route.PathModifier{Type: route.PathReplaceFull, Value: p.GetValue()}
	case workload.PathModifierType_PATH_REPLACE_PREFIX:
		return route.PathModifier{Type: route.PathReplacePrefix, Value: p.GetValue()}
	}
	return route.PathModifier{}
}
