package server_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Load generation for the benchmarks that compare paths: closed loop
// (saturate), open loop at a fixed rate (fixedRate), and the highest open
// loop rate within a p99 bound (p99Search). Every request is post1KB.

const (
	loadClients = 16              // keep-alive connections per path, and closed-loop clients
	loadTimeout = 2 * time.Second // per request
)

type loadResult struct {
	rate     float64 // completed req/s
	p50, p99 time.Duration
	elapsed  time.Duration
	lats     []time.Duration // sorted
}

// merge is the result of r and o together, as if measured in one go.
func (r loadResult) merge(o loadResult) loadResult {
	return summarize(append(slices.Clone(r.lats), o.lats...), r.elapsed+o.elapsed)
}

// saturate runs loadClients closed-loop clients for d.
func saturate(c *http.Client, url string, d time.Duration) (loadResult, error) {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		lats []time.Duration
		errs []error
	)
	start := time.Now()
	end := start.Add(d)
	for range loadClients {
		wg.Go(func() {
			pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), clientParty))
			var mine []time.Duration
			for t := time.Now(); t.Before(end); t = time.Now() {
				if err := post1KB(c, url); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return summarize(lats, time.Since(start)), errors.Join(errs...)
}

// fixedRate sends rate req/s for d, open loop (a slow request does not
// delay the next; past loadClients in flight, requests wait for a
// connection, and that wait counts). Each request is timed from when it is
// sent, not from its scheduled start: time.Sleep wakes about 0.5 ms late on
// these machines, which would add that to every path.
func fixedRate(c *http.Client, url string, rate float64, d time.Duration) (loadResult, error) {
	n := int(d.Seconds() * rate)
	interval := time.Duration(float64(time.Second) / rate)
	lats := make([]time.Duration, n)
	var (
		wg     sync.WaitGroup
		failed atomic.Int64
		first  atomic.Pointer[error]
	)
	start := time.Now()
	for i := range n {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		wg.Go(func() {
			pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), clientParty))
			sent := time.Now()
			if err := post1KB(c, url); err != nil {
				failed.Add(1)
				first.CompareAndSwap(nil, &err)
			}
			lats[i] = time.Since(sent)
		})
	}
	wg.Wait()
	r := summarize(lats, time.Since(start))
	if f := failed.Load(); f > 0 {
		return r, fmt.Errorf("%d of %d failed, first: %w", f, n, *first.Load())
	}
	return r, nil
}

// p99Search finds the highest open-loop rate, of those it tries, whose p99
// stays within bound with no request failing: hi first, then steps of
// bisection below it. Each try runs for step, and for at least 1,000
// requests so that the p99 is not a maximum. Several searches can take
// turns (next, then try), so that a burst of load from elsewhere on the
// machine hits one try of one path rather than a whole path.
type p99Search struct {
	bound, step time.Duration
	steps       int     // bisection steps left
	lo, hi      float64 // lo passed (0: none yet), hi failed
	first       bool    // hi not tried yet
	best        float64
}

func newP99Search(bound time.Duration, hi float64, step time.Duration, steps int) *p99Search {
	return &p99Search{bound: bound, step: step, steps: steps, hi: hi, first: true}
}

// next returns the rate to try, or false when the search is over.
func (s *p99Search) next() (float64, bool) {
	switch {
	case s.first:
		return s.hi, true
	case s.steps > 0 && s.best < s.hi:
		return (s.lo + s.hi) / 2, true
	}
	return 0, false
}

// try runs rate (from next) on c and records whether it passed.
func (s *p99Search) try(c *http.Client, url string, rate float64) {
	d := max(s.step, time.Duration(1000/rate*float64(time.Second)))
	r, err := fixedRate(c, url, rate, d)
	passed := err == nil && r.p99 <= s.bound
	if s.first {
		s.first = false
		if passed {
			s.best, s.lo = rate, rate
		}
		return
	}
	s.steps--
	if passed {
		s.lo, s.best = rate, rate
	} else {
		s.hi = rate
	}
}

func summarize(lats []time.Duration, elapsed time.Duration) loadResult {
	slices.Sort(lats)
	r := loadResult{rate: float64(len(lats)) / elapsed.Seconds(), elapsed: elapsed, lats: lats}
	if len(lats) > 0 {
		r.p50 = lats[len(lats)/2]
		r.p99 = lats[len(lats)*99/100]
	}
	return r
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
