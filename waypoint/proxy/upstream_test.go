package proxy

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ambit-mesh/ambit/waypoint/route"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestRetryBudget(t *testing.T) {
	if _, err := New(Config{Identity: spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/w")}); err == nil {
		t.Fatal("New accepted a config without a dialer")
	}
	p := &Proxy{cfg: Config{RetryBudget: RetryBudget{Percent: 20, MinConcurrency: 3}}}
	b := &backend{load: &load{}}
	for i := range 3 {
		if !p.retryAllowed(b) {
			t.Fatalf("retry %d denied under the minimum concurrency", i)
		}
	}
	if p.retryAllowed(b) {
		t.Fatal("a fourth concurrent retry allowed with no load")
	}
	b.load.active.Store(100) // 20% of 100 active requests
	for i := 3; i < 20; i++ {
		if !p.retryAllowed(b) {
			t.Fatalf("retry %d denied within 20%% of 100", i)
		}
	}
	if p.retryAllowed(b) {
		t.Fatal("retries beyond 20% of active requests allowed")
	}
}

// TestRouteRetryPolicy: a rule's retry stanza decides which answers are retried
// and how often; without one Istio's default applies (two retries on 503 and
// connection failures); the retry budget can refuse retries.
func TestRouteRetryPolicy(t *testing.T) {
	tests := []struct {
		name     string
		retry    *route.Retry
		status   int // what the app always answers
		budget   RetryBudget
		attempts int
	}{
		{"listed code retried up to attempts", route.GatewayRetry(2, []int{500}, 0), 500, RetryBudget{}, 3},
		{"unlisted code not retried", route.GatewayRetry(2, []int{500}, 0), 503, RetryBudget{}, 1},
		{"zero attempts", route.GatewayRetry(0, []int{500}, 0), 500, RetryBudget{}, 1},
		{"many attempts", route.GatewayRetry(5, []int{429}, 0), 429, RetryBudget{}, 6},
		{"default policy retries 503", nil, 503, RetryBudget{}, 3},
		{"default policy does not retry 500", nil, 500, RetryBudget{}, 1},
		{"success not retried", route.GatewayRetry(2, []int{500}, 0), 200, RetryBudget{}, 1},
		{"budget exhausted", route.GatewayRetry(2, []int{500}, 0), 500, RetryBudget{Percent: 0.001}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var calls atomic.Int32
				u := newUpstream(t, func(w http.ResponseWriter, _ *http.Request) {
					calls.Add(1)
					w.WriteHeader(tt.status)
				})
				rule := toEcho()
				rule.Retry = tt.retry
				p := testProxy(t, u, rule, Config{RetryBudget: tt.budget})
				if got := serve(p, "GET", "http://echo/").Code; got != tt.status {
					t.Errorf("status %d, want %d", got, tt.status)
				}
				if got := int(calls.Load()); got != tt.attempts {
					t.Errorf("%d attempts, want %d", got, tt.attempts)
				}
			})
		})
	}
}

// TestRouteRetryConnectFailureAndBackoff: connection failures are retried
// under a route's policy, and no retry starts before the policy's backoff
// (the Gateway API's minimum), growing exponentially.
func TestRouteRetryConnectFailureAndBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var starts []time.Time
		u := newUpstream(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
		u.refuse[testEndpoint.String()] = true
		rule := toEcho()
		rule.Retry = route.GatewayRetry(3, nil, 100*time.Millisecond)
		p := testProxy(t, u, rule, Config{})
		orig := p.dialer
		p.dialer = func(ctx context.Context, n, a string) (net.Conn, error) {
			starts = append(starts, time.Now())
			if len(starts) == 3 { // the pod is back for the third attempt
				u.mu.Lock()
				delete(u.refuse, testEndpoint.String())
				u.mu.Unlock()
			}
			return orig(ctx, n, a)
		}
		if got := serve(p, "GET", "http://echo/").Code; got != http.StatusOK {
			t.Fatalf("status %d after the pod came back", got)
		}
		if len(starts) != 3 {
			t.Fatalf("%d attempts, want 3", len(starts))
		}
		for i, min := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond} {
			gap := starts[i+1].Sub(starts[i])
			if gap < min || gap > 2*min {
				t.Errorf("wait before retry %d: %v, want within [%v, %v]", i+1, gap, min, 2*min)
			}
		}
	})
}

func TestBackoffDelayBounds(t *testing.T) {
	const base = 25 * time.Millisecond
	lowest := func(int64) int64 { return 0 }
	highest := func(n int64) int64 { return n - 1 }
	for _, tt := range []struct {
		attempt int
		lo, hi  time.Duration
	}{
		{0, base, 2 * base},
		{1, 2 * base, 4 * base},
		{2, 4 * base, 8 * base},
		{3, 8 * base, 10 * base},
		{4, 10 * base, 10 * base},
		{60, 10 * base, 10 * base}, // no overflow
	} {
		if got := backoffDelay(base, tt.attempt, lowest); got != tt.lo {
			t.Errorf("attempt %d: shortest wait %v, want %v", tt.attempt, got, tt.lo)
		}
		if got := backoffDelay(base, tt.attempt, highest); got != tt.hi {
			t.Errorf("attempt %d: longest wait %v, want %v", tt.attempt, got, tt.hi)
		}
	}
}

// TestUnresolvedBackendAnswers500: a backendRef the control plane could not
// resolve (RefNotPermitted) gets its share of requests answered 500 and none
// reaches the Service of that name, while the other backend keeps working.
func TestUnresolvedBackendAnswers500(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		u := newUpstream(t, func(w http.ResponseWriter, _ *http.Request) { calls.Add(1) })
		rule := route.Rule{Backends: []route.Backend{
			{Namespace: "demo", Name: "echo", Port: 80, Weight: 1},
			// Same Service, but not permitted: it must not be reached through this ref.
			{Namespace: "demo", Name: "echo", Port: 80, Weight: 1, Unresolved: "RefNotPermitted"},
		}}
		p := testProxy(t, u, rule, Config{})
		codes := map[int]int{}
		const n = 200
		for range n {
			codes[serve(p, "GET", "http://echo/").Code]++
		}
		if codes[200]+codes[500] != n || codes[200] < n/4 || codes[500] < n/4 {
			t.Errorf("answers %v, want about half 200 and half 500", codes)
		}
		if int(calls.Load()) != codes[200] {
			t.Errorf("the app got %d requests for %d answered 200", calls.Load(), codes[200])
		}
	})
}
