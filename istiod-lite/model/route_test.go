package model

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/ambit-mesh/ambit/api/mesh"
	"github.com/ambit-mesh/ambit/api/workload"
)

func TestRouteStatus(t *testing.T) {
	svcKind, core := gwv1.Kind("Service"), gwv1.Group("")
	serviceParent := func(name string) gwv1.ParentReference {
		return gwv1.ParentReference{Group: &core, Kind: &svcKind, Name: gwv1.ObjectName(name)}
	}
	gatewayParent := func(name string) gwv1.ParentReference { return gwv1.ParentReference{Name: gwv1.ObjectName(name)} }
	backend := func(name string) gwv1.HTTPBackendRef {
		return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(name)}}}
	}
	route := func(name string, parents []gwv1.ParentReference, backends ...gwv1.HTTPBackendRef) *gwv1.HTTPRoute {
		return &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: name, Generation: 4},
			Spec: gwv1.HTTPRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: parents},
				Rules: []gwv1.HTTPRouteRule{{BackendRefs: backends}}}}
	}
	m := Build(&Inputs{
		Services: []*corev1.Service{service("app", "echo", nil, kv("app", "echo"), "10.96.0.1"), service("app", "echo-v2", nil, kv("app", "echo2"), "10.96.0.2")},
		Gateways: []*gwv1.Gateway{waypointGateway("app", "wp", nil, "")},
		HTTPRoutes: []*gwv1.HTTPRoute{
			route("gamma", []gwv1.ParentReference{serviceParent("echo")}, backend("echo-v2")),
			route("to-waypoint", []gwv1.ParentReference{gatewayParent("wp")}, backend("echo")),
			route("missing-parent", []gwv1.ParentReference{serviceParent("nope")}, backend("echo")),
			route("missing-backend", []gwv1.ParentReference{serviceParent("echo")}, backend("nope")),
			route("other-controller", []gwv1.ParentReference{gatewayParent("ingress")}, backend("echo")),
		},
	})
	want := map[string]string{ // Accepted/ResolvedRefs reasons
		"gamma": "Accepted/ResolvedRefs", "to-waypoint": "Accepted/ResolvedRefs",
		"missing-parent": "NoMatchingParent/ResolvedRefs", "missing-backend": "Accepted/BackendNotFound",
	}
	for name, w := range want {
		st, ok := m.Routes[StatusKey{Kind: KindHTTPRoute, Ref: Ref{Namespace: "app", Name: name}}]
		if !ok || len(st.Parents) != 1 {
			t.Errorf("%s: status %+v", name, st)
			continue
		}
		c := st.Parents[0].Conditions
		if got := c[0].Reason + "/" + c[1].Reason; got != w || c[0].ObservedGeneration != 4 {
			t.Errorf("%s: %s (generation %d), want %s", name, got, c[0].ObservedGeneration, w)
		}
	}
	if _, ok := m.Routes[StatusKey{Kind: KindHTTPRoute, Ref: Ref{Namespace: "app", Name: "other-controller"}}]; ok {
		t.Error("a route on another controller's Gateway got Ambit status")
	}
}

func backendTo(ns, name string, port int32) gwv1.HTTPBackendRef {
	b := gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(name)}}}
	if ns != "" {
		n := gwv1.Namespace(ns)
		b.Namespace = &n
	}
	if port != 0 {
		p := gwv1.PortNumber(port)
		b.Port = &p
	}
	return b
}

func referenceGrant(ns string, fromKind, fromNS string, toName string) *gwv1beta1.ReferenceGrant {
	rg := &gwv1beta1.ReferenceGrant{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "grant"},
		Spec: gwv1beta1.ReferenceGrantSpec{
			From: []gwv1beta1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: gwv1.Kind(fromKind), Namespace: gwv1.Namespace(fromNS)}},
			To:   []gwv1beta1.ReferenceGrantTo{{Group: "", Kind: "Service"}},
		},
	}
	if toName != "" {
		n := gwv1.ObjectName(toName)
		rg.Spec.To[0].Name = &n
	}
	return rg
}

// TestRouteBackendNeedsReferenceGrant: a backendRef to a Service in another
// namespace resolves only with a ReferenceGrant there for the route's kind and
// namespace; otherwise ResolvedRefs is False (RefNotPermitted), the backend is sent
// marked unresolved (its share gets 500) and the waypoint is not given that
// Service, while the route stays accepted.
func TestRouteBackendNeedsReferenceGrant(t *testing.T) {
	base := Inputs{
		Namespaces: []*corev1.Namespace{namespace("app", nil), namespace("other", nil)},
		Services: []*corev1.Service{
			service("app", "echo", kv(mesh.LabelUseWaypoint, "wp"), kv("app", "echo"), "10.96.0.1"),
			service("other", "x", nil, kv("app", "x"), "10.96.0.2"),
		},
		Pods:     []*corev1.Pod{pod("other", "x-1", "x", "node", "10.1.0.2", kv("app", "x"))},
		Gateways: []*gwv1.Gateway{waypointGateway("app", "wp", nil, "")},
	}
	echoParent := []gwv1.ParentReference{parentRef("Service", "", "echo", "", 0)}
	mirrorTo := func(b gwv1.HTTPBackendRef) []gwv1.HTTPRouteFilter {
		return []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestMirror,
			RequestMirror: &gwv1.HTTPRequestMirrorFilter{BackendRef: b.BackendObjectReference}}}
	}
	tests := []struct {
		name    string
		grants  []*gwv1beta1.ReferenceGrant
		rule    gwv1.HTTPRouteRule
		grpc    bool
		reason  gwv1.RouteConditionReason
		servesX bool // the waypoint gets Service other/x
	}{
		{name: "no grant", rule: gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{backendTo("other", "x", 80)}},
			reason: gwv1.RouteReasonRefNotPermitted},
		{name: "grant for the Service", grants: []*gwv1beta1.ReferenceGrant{referenceGrant("other", KindHTTPRoute, "app", "x")},
			rule: gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{backendTo("other", "x", 80)}}, reason: gwv1.RouteReasonResolvedRefs, servesX: true},
		{name: "grant for every Service", grants: []*gwv1beta1.ReferenceGrant{referenceGrant("other", KindHTTPRoute, "app", "")},
			rule: gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{backendTo("other", "x", 80)}}, reason: gwv1.RouteReasonResolvedRefs, servesX: true},
		{name: "grant for another Service", grants: []*gwv1beta1.ReferenceGrant{referenceGrant("other", KindHTTPRoute, "app", "y")},
			rule: gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{backendTo("other", "x", 80)}}, reason: gwv1.RouteReasonRefNotPermitted},
		{name: "grant for another namespace", grants: []*gwv1beta1.ReferenceGrant{referenceGrant("other", KindHTTPRoute, "elsewhere", "x")},
			rule: gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{backendTo("other", "x", 80)}}, reason: gwv1.RouteReasonRefNotPermitted},
		{name: "grant for another kind", grants: []*gwv1beta1.ReferenceGrant{referenceGrant("other", KindGRPCRoute, "app", "x")},
			rule: gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{backendTo("other", "x", 80)}}, reason: gwv1.RouteReasonRefNotPermitted},
		{name: "grant in the route's namespace", grants: []*gwv1beta1.ReferenceGrant{referenceGrant("app", KindHTTPRoute, "app", "x")},
			rule: gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{backendTo("other", "x", 80)}}, reason: gwv1.RouteReasonRefNotPermitted},
		{name: "GRPCRoute with its grant", grpc: true, grants: []*gwv1beta1.ReferenceGrant{referenceGrant("other", KindGRPCRoute, "app", "x")},
			rule: gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{backendTo("other", "x", 80)}}, reason: gwv1.RouteReasonResolvedRefs, servesX: true},
		{name: "GRPCRoute without", grpc: true, grants: []*gwv1beta1.ReferenceGrant{referenceGrant("other", KindHTTPRoute, "app", "x")},
			rule: gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{backendTo("other", "x", 80)}}, reason: gwv1.RouteReasonRefNotPermitted},
		{name: "granted but missing", grants: []*gwv1beta1.ReferenceGrant{referenceGrant("other", KindHTTPRoute, "app", "")},
			rule: gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{backendTo("other", "nope", 80)}}, reason: gwv1.RouteReasonBackendNotFound},
		{name: "same namespace needs no grant", rule: gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{backendTo("", "echo", 80)}},
			reason: gwv1.RouteReasonResolvedRefs},
		{name: "mirror without grant", rule: gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{backendTo("", "echo", 80)},
			Filters: mirrorTo(backendTo("other", "x", 80))}, reason: gwv1.RouteReasonRefNotPermitted},
		{name: "mirror with grant", grants: []*gwv1beta1.ReferenceGrant{referenceGrant("other", KindHTTPRoute, "app", "x")},
			rule:   gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{backendTo("", "echo", 80)}, Filters: mirrorTo(backendTo("other", "x", 80))},
			reason: gwv1.RouteReasonResolvedRefs, servesX: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := base
			in.ReferenceGrants = tt.grants
			kind := KindHTTPRoute
			if tt.grpc {
				kind = KindGRPCRoute
				r := grpcRoute("app", "r", echoParent)
				r.Spec.Rules = []gwv1.GRPCRouteRule{{BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: tt.rule.BackendRefs[0].BackendRef}}}}
				in.GRPCRoutes = []*gwv1.GRPCRoute{r}
			} else {
				in.HTTPRoutes = []*gwv1.HTTPRoute{httpRoute("app", "r", echoParent, tt.rule)}
			}
			m := Build(&in)
			st := m.Routes[StatusKey{Kind: kind, Ref: Ref{Namespace: "app", Name: "r"}}]
			if len(st.Parents) != 1 {
				t.Fatalf("status %+v", st)
			}
			acc, res := st.Parents[0].Conditions[0], st.Parents[0].Conditions[1]
			if acc.Status != metav1.ConditionTrue {
				t.Errorf("Accepted %s %s: an unresolved backend must not detach the route", acc.Reason, acc.Message)
			}
			if res.Reason != string(tt.reason) || (res.Status == metav1.ConditionTrue) != (tt.reason == gwv1.RouteReasonResolvedRefs) {
				t.Errorf("ResolvedRefs %s %s (%s), want %s", res.Status, res.Reason, res.Message, tt.reason)
			}
			rt := m.routeProtos[RouteName(kind, Ref{Namespace: "app", Name: "r"})]
			b := rt.GetRules()[0].GetBackends()[0]
			if unresolved := b.GetUnresolved() != ""; unresolved != (tt.reason != gwv1.RouteReasonResolvedRefs && len(tt.rule.Filters) == 0) {
				t.Errorf("backend %s/%s unresolved %q", b.GetNamespace(), b.GetName(), b.GetUnresolved())
			}
			if len(tt.rule.Filters) > 0 {
				mirrors := rt.GetRules()[0].GetFilters().GetMirrors()
				if (len(mirrors) == 1) != tt.servesX {
					t.Errorf("mirrors %v", mirrors)
				}
			}
			addrs := m.ForWaypoint(Ref{Namespace: "app", Name: "wp"})[workload.AddressType]
			_, svc := addrs["other/x.other.svc.cluster.local"]
			_, ep := addrs[WorkloadUID("Kubernetes", "other", "x-1")]
			if svc != tt.servesX || ep != tt.servesX {
				t.Errorf("waypoint has Service other/x: %v, its endpoint: %v; want %v", svc, ep, tt.servesX)
			}
		})
	}
}

// TestRouteRetryAndTimeouts: a rule's retry stanza and timeouts reach the Route
// resource as Istio reads them (attempts default to 2, 0 disables retries; "0s"
// disables a timeout).
func TestRouteRetryAndTimeouts(t *testing.T) {
	dur := func(s string) *gwv1.Duration { d := gwv1.Duration(s); return &d }
	attempts := func(n int) *int { return &n }
	tests := []struct {
		name     string
		retry    *gwv1.HTTPRouteRetry
		timeouts *gwv1.HTTPRouteTimeouts
		want     *workload.RouteRule
	}{
		{name: "none", want: &workload.RouteRule{}},
		{name: "codes only", retry: &gwv1.HTTPRouteRetry{Codes: []gwv1.HTTPRouteRetryStatusCode{500, 503}},
			want: &workload.RouteRule{Retry: &workload.RouteRetry{Attempts: 2, Codes: []uint32{500, 503}}}},
		{name: "everything", retry: &gwv1.HTTPRouteRetry{Codes: []gwv1.HTTPRouteRetryStatusCode{429}, Attempts: attempts(4), Backoff: dur("250ms")},
			timeouts: &gwv1.HTTPRouteTimeouts{Request: dur("10s"), BackendRequest: dur("2s")},
			want: &workload.RouteRule{RequestTimeoutNanos: int64(10 * time.Second), BackendRequestTimeoutNanos: int64(2 * time.Second),
				Retry: &workload.RouteRetry{Attempts: 4, Codes: []uint32{429}, BackoffNanos: int64(250 * time.Millisecond)}}},
		{name: "zero attempts", retry: &gwv1.HTTPRouteRetry{Attempts: attempts(0)}, want: &workload.RouteRule{Retry: &workload.RouteRetry{}}},
		{name: "timeouts disabled", timeouts: &gwv1.HTTPRouteTimeouts{Request: dur("0s")}, want: &workload.RouteRule{}},
		{name: "compound duration", timeouts: &gwv1.HTTPRouteTimeouts{Request: dur("1h30m")}, want: &workload.RouteRule{RequestTimeoutNanos: int64(90 * time.Minute)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Build(&Inputs{
				Services:   []*corev1.Service{service("app", "echo", nil, kv("app", "echo"), "10.96.0.1")},
				HTTPRoutes: []*gwv1.HTTPRoute{httpRoute("app", "r", []gwv1.ParentReference{parentRef("Service", "", "echo", "", 0)}, gwv1.HTTPRouteRule{Retry: tt.retry, Timeouts: tt.timeouts})},
			})
			got := m.routeProtos["HTTPRoute/app/r"].GetRules()
			if len(got) != 1 || !proto.Equal(got[0], tt.want) {
				t.Errorf("rule %v, want %v", got, tt.want)
			}
		})
	}
}

// TestInvalidRouteIsNotAccepted: specs the waypoint cannot apply as written are
// refused with Accepted=False, a Gateway API reason and a message naming the rule
// and the problem.
func TestInvalidRouteIsNotAccepted(t *testing.T) {
	regex := gwv1.PathMatchRegularExpression
	headerRegex := gwv1.HeaderMatchRegularExpression
	queryRegex := gwv1.QueryParamMatchRegularExpression
	dur := func(s string) *gwv1.Duration { d := gwv1.Duration(s); return &d }
	attempts := func(n int) *int { return &n }
	bad := "a(b"
	tests := []struct {
		name   string
		rule   gwv1.HTTPRouteRule
		reason gwv1.RouteConditionReason
		in     string // in the message
	}{
		{"path regex", gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: &regex, Value: &bad}}}},
			gwv1.RouteReasonUnsupportedValue, `rule 0: path regular expression "a(b"`},
		{"header regex", gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{{Headers: []gwv1.HTTPHeaderMatch{{Type: &headerRegex, Name: "x", Value: bad}}}}},
			gwv1.RouteReasonUnsupportedValue, "header x regular expression"},
		{"query regex", gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{{QueryParams: []gwv1.HTTPQueryParamMatch{{Type: &queryRegex, Name: "q", Value: bad}}}}},
			gwv1.RouteReasonUnsupportedValue, "query parameter q regular expression"},
		{"extension filter", gwv1.HTTPRouteRule{Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterExtensionRef,
			ExtensionRef: &gwv1.LocalObjectReference{Group: "example.com", Kind: "Auth", Name: "a"}}}},
			gwv1.RouteReasonUnsupportedValue, "filter type ExtensionRef is not supported"},
		{"CORS filter", gwv1.HTTPRouteRule{Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterCORS, CORS: &gwv1.HTTPCORSFilter{}}}},
			gwv1.RouteReasonUnsupportedValue, "filter type CORS"},
		{"redirect and rewrite", gwv1.HTTPRouteRule{Filters: []gwv1.HTTPRouteFilter{
			{Type: gwv1.HTTPRouteFilterRequestRedirect, RequestRedirect: &gwv1.HTTPRequestRedirectFilter{}},
			{Type: gwv1.HTTPRouteFilterURLRewrite, URLRewrite: &gwv1.HTTPURLRewriteFilter{}}}},
			gwv1.RouteReasonIncompatibleFilters, "cannot be combined"},
		{"retry attempts", gwv1.HTTPRouteRule{Retry: &gwv1.HTTPRouteRetry{Attempts: attempts(-1)}}, gwv1.RouteReasonUnsupportedValue, "retry.attempts -1"},
		{"retry code", gwv1.HTTPRouteRule{Retry: &gwv1.HTTPRouteRetry{Codes: []gwv1.HTTPRouteRetryStatusCode{200}}}, gwv1.RouteReasonUnsupportedValue, "retry.codes: 200"},
		{"duration", gwv1.HTTPRouteRule{Timeouts: &gwv1.HTTPRouteTimeouts{Request: dur("soon")}}, gwv1.RouteReasonUnsupportedValue, `timeouts.request "soon"`},
		{"backend timeout over request timeout", gwv1.HTTPRouteRule{Timeouts: &gwv1.HTTPRouteTimeouts{Request: dur("1s"), BackendRequest: dur("2s")}},
			gwv1.RouteReasonUnsupportedValue, "exceeds timeouts.request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Build(&Inputs{
				Services:   []*corev1.Service{service("app", "echo", nil, kv("app", "echo"), "10.96.0.1")},
				HTTPRoutes: []*gwv1.HTTPRoute{httpRoute("app", "r", []gwv1.ParentReference{parentRef("Service", "", "echo", "", 0)}, tt.rule)},
			})
			st := m.Routes[StatusKey{Kind: KindHTTPRoute, Ref: Ref{Namespace: "app", Name: "r"}}]
			if len(st.Parents) != 1 {
				t.Fatalf("status %+v", st)
			}
			acc := st.Parents[0].Conditions[0]
			if acc.Status != metav1.ConditionFalse || acc.Reason != string(tt.reason) || !strings.Contains(acc.Message, tt.in) {
				t.Errorf("Accepted %s %s %q, want False %s containing %q", acc.Status, acc.Reason, acc.Message, tt.reason, tt.in)
			}
		})
	}

	t.Run("GRPCRoute method regex", func(t *testing.T) {
		r := grpcRoute("app", "g", []gwv1.ParentReference{parentRef("Service", "", "echo", "", 0)})
		re := gwv1.GRPCMethodMatchRegularExpression
		r.Spec.Rules = []gwv1.GRPCRouteRule{{Matches: []gwv1.GRPCRouteMatch{{Method: &gwv1.GRPCMethodMatch{Type: &re, Service: &bad}}}}}
		m := Build(&Inputs{Services: []*corev1.Service{service("app", "echo", nil, nil, "10.96.0.1")}, GRPCRoutes: []*gwv1.GRPCRoute{r}})
		acc := m.Routes[StatusKey{Kind: KindGRPCRoute, Ref: Ref{Namespace: "app", Name: "g"}}].Parents[0].Conditions[0]
		if acc.Status != metav1.ConditionFalse || !strings.Contains(acc.Message, "method service regular expression") {
			t.Errorf("Accepted %s %q", acc.Status, acc.Message)
		}
	})
}

// TestInvalidRouteKeepsLastValidVersion: an edit that makes a route invalid is
// refused and the previous valid translation stays served, across any number of
// rebuilds, until a valid edit replaces it. Without a previous version (istiod-lite
// restarted) the route is sent marked invalid, so waypoints keep what they applied;
// a route recreated under the same name does not inherit the old one's.
func TestInvalidRouteKeepsLastValidVersion(t *testing.T) {
	regex := gwv1.PathMatchRegularExpression
	route := func(gen int64, uid, path string) *gwv1.HTTPRoute {
		r := httpRoute("app", "r", []gwv1.ParentReference{parentRef("Service", "", "echo", "", 0)}, gwv1.HTTPRouteRule{
			Matches:     []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: &regex, Value: &path}}},
			BackendRefs: []gwv1.HTTPBackendRef{backendTo("", "echo", 80)},
		})
		r.Generation, r.UID = gen, types.UID(uid)
		return r
	}
	inputs := func(r *gwv1.HTTPRoute) *Inputs {
		return &Inputs{
			Namespaces: []*corev1.Namespace{namespace("app", nil)},
			Services:   []*corev1.Service{service("app", "echo", kv(mesh.LabelUseWaypoint, "wp"), kv("app", "echo"), "10.96.0.1")},
			Gateways:   []*gwv1.Gateway{waypointGateway("app", "wp", nil, "")},
			HTTPRoutes: []*gwv1.HTTPRoute{r},
		}
	}
	served := func(m *Model) *workload.Route {
		t.Helper()
		res := m.ForWaypoint(Ref{Namespace: "app", Name: "wp"})[workload.RouteType]["HTTPRoute/app/r"]
		if res == nil {
			t.Fatal("route not served to the waypoint")
		}
		return res.Message.(*workload.Route)
	}
	accepted := func(m *Model) metav1.Condition {
		return m.Routes[StatusKey{Kind: KindHTTPRoute, Ref: Ref{Namespace: "app", Name: "r"}}].Parents[0].Conditions[0]
	}
	pathOf := func(r *workload.Route) string { return r.GetRules()[0].GetMatches()[0].GetPath() }

	m1 := BuildFrom(nil, inputs(route(1, "u1", "/v1/.*")))
	if c := accepted(m1); c.Status != metav1.ConditionTrue {
		t.Fatalf("valid route: %+v", c)
	}
	good := served(m1)

	m2 := BuildFrom(m1, inputs(route(2, "u1", "/v1/(")))
	c := accepted(m2)
	if c.Status != metav1.ConditionFalse || c.Reason != string(gwv1.RouteReasonUnsupportedValue) || c.ObservedGeneration != 2 ||
		!strings.Contains(c.Message, "path regular expression") || !strings.Contains(c.Message, "generation 1") {
		t.Errorf("invalid edit: Accepted %s %s %q (generation %d)", c.Status, c.Reason, c.Message, c.ObservedGeneration)
	}
	if got := served(m2); !proto.Equal(got, good) {
		t.Errorf("served %v, want the last valid version %v", got, good)
	}
	m3 := BuildFrom(m2, inputs(route(2, "u1", "/v1/(")))
	if got := served(m3); !proto.Equal(got, good) {
		t.Errorf("after another rebuild served %v, want the last valid version", got)
	}

	m4 := BuildFrom(m3, inputs(route(3, "u1", "/v3/.*")))
	if c := accepted(m4); c.Status != metav1.ConditionTrue || pathOf(served(m4)) != "/v3/.*" {
		t.Errorf("valid edit after the invalid one: %+v, served %v", c, served(m4))
	}

	restarted := BuildFrom(nil, inputs(route(2, "u1", "/v1/(")))
	got := served(restarted)
	if got.GetInvalid() == "" || len(got.GetRules()) != 0 || len(got.GetParents()) != 1 {
		t.Errorf("without a previous version: served %v, want the route marked invalid with its parents", got)
	}
	if c := accepted(restarted); !strings.Contains(c.Message, "waypoints keep the version they last applied") {
		t.Errorf("message %q", c.Message)
	}

	recreated := BuildFrom(m1, inputs(route(1, "u2", "/v1/(")))
	if got := served(recreated); got.GetInvalid() == "" {
		t.Errorf("a recreated route inherited its predecessor's version: %v", got)
	}
}
