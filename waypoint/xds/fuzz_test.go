package xds

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ambit-mesh/ambit/api/workload"
	"github.com/ambit-mesh/ambit/waypoint/route"
)

// FuzzRoute feeds untrusted Route resources (the bytes of an xDS response) through
// conversion and compilation: nothing may panic, a route marked invalid never
// converts, and what converts and validates compiles into a table.
func FuzzRoute(f *testing.F) {
	for _, r := range []*workload.Route{
		{Namespace: "app", Name: "r", Parents: []*workload.RouteParent{{Kind: "Service", Namespace: "app", Name: "echo", Port: 80}},
			Rules: []*workload.RouteRule{{
				Matches: []*workload.RouteMatch{{PathType: workload.PathMatchType_PATH_REGEX, Path: "/a/.*",
					Headers: []*workload.ValueMatch{{Name: "x", Value: "v[0-9]", Regex: true}}}},
				Backends: []*workload.RouteBackend{{Namespace: "app", Name: "echo", Port: 80, Weight: 1},
					{Namespace: "other", Name: "x", Port: 80, Weight: 1, Unresolved: "RefNotPermitted"}},
				RequestTimeoutNanos: int64(time.Second), BackendRequestTimeoutNanos: int64(time.Second / 2),
				Retry: &workload.RouteRetry{Attempts: 3, Codes: []uint32{500, 503}, BackoffNanos: int64(25 * time.Millisecond)},
			}}},
		{Kind: workload.RouteKind_GRPC_ROUTE, Namespace: "app", Name: "g", Rules: []*workload.RouteRule{{
			Matches: []*workload.RouteMatch{{Grpc: &workload.GRPCMethodMatch{Service: "pkg.S", Method: "M.*", Regex: true}}}}}},
		{Namespace: "app", Name: "bad", Invalid: "rule 0: path regular expression"},
		{Namespace: "app", Name: "r", Rules: []*workload.RouteRule{{Retry: &workload.RouteRetry{Attempts: 1 << 31, Codes: []uint32{1 << 31}, BackoffNanos: -1}}}},
	} {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in := &workload.Route{}
		if proto.Unmarshal(b, in) != nil {
			return
		}
		got, err := Route(in)
		if in.GetInvalid() != "" && err == nil {
			t.Fatal("a route marked invalid converted")
		}
		if err != nil {
			return
		}
		if route.Validate(&got.Route) != nil {
			return
		}
		if _, err := route.Compile([]route.Route{got.Route}); err != nil {
			t.Fatalf("a validated route does not compile: %v", err)
		}
		for i, r := range got.Rules {
			if r.Retry != nil && (r.Retry.Attempts < 0 || r.Retry.Attempts > route.MaxRetryAttempts) {
				t.Fatalf("rule %d: %d retry attempts validated", i, r.Retry.Attempts)
			}
		}
	})
}
