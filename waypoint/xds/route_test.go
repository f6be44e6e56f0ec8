package xds

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ambit-mesh/ambit/api/workload"
	"github.com/ambit-mesh/ambit/waypoint/model"
	"github.com/ambit-mesh/ambit/waypoint/route"
)

func TestRouteConvertsEveryField(t *testing.T) {
	created := time.Unix(1700000000, 0).UTC()
	in := &workload.Route{
		Kind: workload.RouteKind_HTTP_ROUTE, Namespace: "app", Name: "split", CreatedUnixNanos: created.UnixNano(),
		Parents:   []*workload.RouteParent{{Kind: "Service", Namespace: "app", Name: "echo", Port: 80}},
		Hostnames: []string{"echo.app.svc.cluster.local"},
		Rules: []*workload.RouteRule{{
			Name: "v2",
			Matches: []*workload.RouteMatch{{
				PathType: workload.PathMatchType_PATH_PREFIX, Path: "/api", Method: "GET",
				Headers:     []*workload.ValueMatch{{Name: "x-version", Value: "v2"}},
				QueryParams: []*workload.ValueMatch{{Name: "q", Value: "^a+$", Regex: true}},
			}},
			Filters: &workload.RouteFilters{
				RequestHeaders: &workload.HeaderModifier{Set: []*workload.RouteHeader{{Name: "x-a", Value: "1"}}, Remove: []string{"x-b"}},
				Rewrite:        &workload.RouteRewrite{Path: &workload.PathModifier{Type: workload.PathModifierType_PATH_REPLACE_PREFIX, Value: "/v2"}},
				Mirrors:        []*workload.RouteMirror{{Backend: &workload.RouteBackend{Namespace: "app", Name: "shadow", Port: 80, Weight: 1}, Percent: 10}},
			},
			Backends: []*workload.RouteBackend{
				{Namespace: "app", Name: "echo-v2", Port: 80, Weight: 90},
				{Namespace: "app", Name: "echo", Port: 80, Weight: 10},
				{Namespace: "other", Name: "secret", Port: 80, Weight: 5, Unresolved: "RefNotPermitted: no ReferenceGrant"},
			},
			RequestTimeoutNanos:        int64(2 * time.Second),
			BackendRequestTimeoutNanos: int64(time.Second),
			Retry:                      &workload.RouteRetry{Attempts: 3, Codes: []uint32{500, 503}, BackoffNanos: int64(100 * time.Millisecond)},
		}},
	}
	want := model.Route{
		Parents: []model.Ref{{Kind: "Service", Namespace: "app", Name: "echo", Port: 80}},
		Route: route.Route{
			Kind: route.KindHTTP, Namespace: "app", Name: "split", Created: created,
			Hostnames: []string{"echo.app.svc.cluster.local"},
			Rules: []route.Rule{{
				Name: "v2",
				Matches: []route.Match{{
					Path: route.PathMatch{Type: route.PathPrefix, Value: "/api"}, Method: "GET",
					Headers: []route.HeaderMatch{{Type: route.ValueExact, Name: "x-version", Value: "v2"}},
					Query:   []route.QueryMatch{{Type: route.ValueRegex, Name: "q", Value: "^a+$"}},
				}},
				Filters: route.Filters{
					RequestHeaders: route.HeaderModifier{Set: []route.Header{{Name: "x-a", Value: "1"}}, Remove: []string{"x-b"}},
					Rewrite:        &route.Rewrite{Path: route.PathModifier{Type: route.PathReplacePrefix, Value: "/v2"}},
					Mirrors:        []route.Mirror{{Backend: route.Backend{Namespace: "app", Name: "shadow", Port: 80, Weight: 1}, Percent: 10}},
				},
				Backends: []route.Backend{
					{Namespace: "app", Name: "echo-v2", Port: 80, Weight: 90},
					{Namespace: "app", Name: "echo", Port: 80, Weight: 10},
					{Namespace: "other", Name: "secret", Port: 80, Weight: 5, Unresolved: "RefNotPermitted: no ReferenceGrant"},
				},
				Timeouts: route.Timeouts{Request: 2 * time.Second, BackendRequest: time.Second},
				Retry: &route.Retry{Attempts: 3, On: route.RetryConnectFailure | route.RetryReset | route.RetryStatusCodes,
					Codes: []int{500, 503}, Backoff: 100 * time.Millisecond},
			}},
		},
	}
	got, err := Route(in)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(route.HeaderMatch{}, route.QueryMatch{})); diff != "" {
		t.Errorf("Route (-want +got):\n%s", diff)
	}
}

func TestRouteGRPCMethodBecomesPathMatch(t *testing.T) {
	got, err := Route(&workload.Route{Kind: workload.RouteKind_GRPC_ROUTE, Namespace: "app", Name: "g", Rules: []*workload.RouteRule{{
		Matches: []*workload.RouteMatch{{Grpc: &workload.GRPCMethodMatch{Service: "echo.Echo", Method: "Say"}}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != route.KindGRPC || got.Rules[0].Matches[0].Path != (route.PathMatch{Type: route.PathExact, Value: "/echo.Echo/Say"}) {
		t.Errorf("got %+v", got)
	}
}

func TestRouteRejectsWhatCannotBeRepresented(t *testing.T) {
	for name, r := range map[string]*workload.Route{
		"no name":          {Namespace: "app"},
		"parent port":      {Namespace: "app", Name: "r", Parents: []*workload.RouteParent{{Kind: "Service", Name: "s", Port: 70000}}},
		"port too large":   {Namespace: "app", Name: "r", Rules: []*workload.RouteRule{{Backends: []*workload.RouteBackend{{Name: "b", Port: 70000}}}}},
		"negative timeout": {Namespace: "app", Name: "r", Rules: []*workload.RouteRule{{RequestTimeoutNanos: -1}}},
		"grpc match in an HTTPRoute": {Namespace: "app", Name: "r", Rules: []*workload.RouteRule{{
			Matches: []*workload.RouteMatch{{Grpc: &workload.GRPCMethodMatch{Service: "s"}}}}}},
		"mirror percent": {Namespace: "app", Name: "r", Rules: []*workload.RouteRule{{Filters: &workload.RouteFilters{
			Mirrors: []*workload.RouteMirror{{Backend: &workload.RouteBackend{Name: "b", Port: 80}, Percent: 200}}}}}},
		"rejected by istiod-lite": {Namespace: "app", Name: "r", Invalid: "rule 0: path regex: missing closing )"},
	} {
		if _, err := Route(r); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
