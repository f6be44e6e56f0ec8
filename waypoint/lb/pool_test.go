package lb

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

func newPool(t *testing.T, policy Policy, o Outlier, n int) *Pool[string] {
	t.Helper()
	p := New[string](policy, o, nil)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("10.0.0.%d:80", i+1)
	}
	p.Update(keys, keys)
	return p
}

// fail sends n requests straight to key, each failing with o.
func fail(t *testing.T, p *Pool[string], key string, n int, o Outcome) {
	t.Helper()
	for range n {
		p.mu.Lock()
		var h *Host[string]
		for _, x := range p.hosts {
			if x.key == key {
				h = x
			}
		}
		p.mu.Unlock()
		h.active.Add(1)
		h.Done(o)
	}
}

func picks(p *Pool[string], n int) map[string]int {
	got := map[string]int{}
	for range n {
		h, _ := p.Pick()
		got[h.Value()]++
		h.Done(Success)
	}
	return got
}

func TestRoundRobinIsEven(t *testing.T) {
	p := newPool(t, RoundRobin, Outlier{}, 4)
	for k, n := range picks(p, 400) {
		if n != 100 {
			t.Errorf("%s picked %d times, want 100", k, n)
		}
	}
}

func TestLeastRequestAvoidsBusyHost(t *testing.T) {
	p := newPool(t, LeastRequest, Outlier{}, 2)
	busy, _ := p.Pick()
	for range 50 {
		busy.active.Add(1) // 51 requests in flight on it
	}
	got := picks(p, 200)
	// Two random choices: the busy host wins only when drawn twice (1/4).
	if n := got[busy.Value()]; n > 80 {
		t.Errorf("busy host picked %d of 200 times", n)
	}
}

func TestOutlierEjectionAndReturn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := Outlier{ConsecutiveErrors: 3, BaseEjectionTime: 30 * time.Second, Interval: time.Hour, MaxEjectionPercent: 50}
		p := newPool(t, RoundRobin, o, 2)
		bad := "10.0.0.1:80"

		fail(t, p, bad, 2, ConnectFailure)
		fail(t, p, bad, 1, Success) // resets the count
		fail(t, p, bad, 2, ServerError)
		if p.Ejected(bad) {
			t.Fatal("ejected after 2 consecutive errors")
		}
		fail(t, p, bad, 1, ServerError)
		if !p.Ejected(bad) {
			t.Fatal("not ejected after 3 consecutive errors")
		}
		if got := picks(p, 10); got[bad] != 0 {
			t.Fatalf("ejected host picked %d times", got[bad])
		}

		time.Sleep(30 * time.Second)
		if p.Ejected(bad) {
			t.Fatal("still ejected after the base ejection time")
		}
		// Second ejection lasts twice as long.
		fail(t, p, bad, 3, ConnectFailure)
		time.Sleep(59 * time.Second)
		if !p.Ejected(bad) {
			t.Fatal("second ejection ended before 2x base time")
		}
		time.Sleep(time.Second)
		if p.Ejected(bad) {
			t.Fatal("second ejection outlasted 2x base time")
		}
	})
}

func TestOutlierForgivesAfterHealthyIntervals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := Outlier{ConsecutiveErrors: 1, BaseEjectionTime: 10 * time.Second, Interval: 10 * time.Second, MaxEjectionPercent: 50}
		p := newPool(t, RoundRobin, o, 2)
		bad := "10.0.0.1:80"
		fail(t, p, bad, 1, ServerError)
		time.Sleep(10 * time.Second)
		p.Ejected(bad)               // back in rotation now
		time.Sleep(20 * time.Second) // two healthy intervals: count back to 0
		fail(t, p, bad, 1, ServerError)
		time.Sleep(10 * time.Second)
		if p.Ejected(bad) {
			t.Fatal("ejection time grew although the host had recovered")
		}
	})
}

func TestOutlierRespectsMaxEjectionPercent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPool(t, RoundRobin, Outlier{ConsecutiveErrors: 1}, 4) // 10%: one host
		fail(t, p, "10.0.0.1:80", 1, ServerError)
		fail(t, p, "10.0.0.2:80", 1, ServerError)
		if !p.Ejected("10.0.0.1:80") || p.Ejected("10.0.0.2:80") {
			t.Fatal("want exactly the first failing host ejected")
		}
	})
}

func TestOutlierIgnoresAbandonedAndSingleHost(t *testing.T) {
	p := newPool(t, RoundRobin, Outlier{ConsecutiveErrors: 1}, 1)
	fail(t, p, "10.0.0.1:80", 5, ConnectFailure)
	if p.Ejected("10.0.0.1:80") {
		t.Error("the only host was ejected")
	}
	p2 := newPool(t, RoundRobin, Outlier{ConsecutiveErrors: 1, MaxEjectionPercent: 100}, 2)
	fail(t, p2, "10.0.0.1:80", 5, Abandoned)
	if p2.Ejected("10.0.0.1:80") {
		t.Error("client cancellations ejected a host")
	}
}

func TestPickAvoidsTriedHosts(t *testing.T) {
	p := newPool(t, LeastRequest, Outlier{}, 3)
	for range 50 {
		h, _ := p.Pick("10.0.0.1:80", "10.0.0.2:80")
		if h.Value() != "10.0.0.3:80" {
			t.Fatalf("picked %s, want the one not tried", h.Value())
		}
		h.Done(Success)
	}
	// All tried: pick anyway.
	if _, ok := p.Pick("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"); !ok {
		t.Fatal("no pick when every host was tried")
	}
}

func TestUpdateKeepsState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPool(t, RoundRobin, Outlier{ConsecutiveErrors: 1, MaxEjectionPercent: 100}, 2)
		fail(t, p, "10.0.0.1:80", 1, ServerError)
		p.Update([]string{"10.0.0.1:80", "10.0.0.3:80"}, []string{"one", "three"})
		if !p.Ejected("10.0.0.1:80") {
			t.Fatal("update forgot the ejection")
		}
		h, _ := p.Pick()
		if h.Value() != "three" {
			t.Fatalf("picked %s, want three", h.Value())
		}
		h.Done(Success)
		if _, ok := New[int](RoundRobin, Outlier{}, nil).Pick(); ok {
			t.Fatal("empty pool picked")
		}
	})
}

func TestPanicModeWhenAllEjected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPool(t, RoundRobin, Outlier{ConsecutiveErrors: 1, MaxEjectionPercent: 100}, 2)
		fail(t, p, "10.0.0.1:80", 1, ServerError)
		fail(t, p, "10.0.0.2:80", 1, ServerError)
		if _, ok := p.Pick(); !ok {
			t.Fatal("no pick with every host ejected")
		}
	})
}
