package proxy

import (
	"testing"

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
