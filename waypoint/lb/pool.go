package lb

import (
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Policy is a load balancing algorithm.
type Policy uint8

// Policies.
const (
	// LeastRequest picks the less loaded of two random healthy hosts
	// (Envoy's and Istio's default).
	LeastRequest Policy = iota
	RoundRobin
)

// Defaults of Outlier.
const (
	DefaultConsecutiveErrors  = 5
	DefaultBaseEjectionTime   = 30 * time.Second
	DefaultMaxEjectionTime    = 300 * time.Second
	DefaultInterval           = 10 * time.Second
	DefaultMaxEjectionPercent = 10
)

// Outlier configures outlier detection. Zero fields take the defaults;
// ConsecutiveErrors < 0 disables detection.
type Outlier struct {
	// ConsecutiveErrors is how many 5xx answers or connection failures
	// in a row eject a host.
	ConsecutiveErrors int
	// BaseEjectionTime times the host's ejection count is how long an
	// ejection lasts, up to MaxEjectionTime.
	BaseEjectionTime, MaxEjectionTime time.Duration
	// Interval: every Interval a host stays in rotation takes one off its
	// ejection count, so a host that recovered for good is forgiven.
	Interval time.Duration
	// MaxEjectionPercent bounds the share of hosts ejected at once; at
	// least one host may always be ejected.
	MaxEjectionPercent int
}

func (o Outlier) withDefaults() Outlier {
	if o.ConsecutiveErrors == 0 {
		o.ConsecutiveErrors = DefaultConsecutiveErrors
	}
	if o.BaseEjectionTime == 0 {
		o.BaseEjectionTime = DefaultBaseEjectionTime
	}
	if o.MaxEjectionTime == 0 {
		o.MaxEjectionTime = DefaultMaxEjectionTime
	}
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.MaxEjectionPercent == 0 {
		o.MaxEjectionPercent = DefaultMaxEjectionPercent
	}
	return o
}

// Outcome is what became of a request sent to a host.
type Outcome uint8

// Outcomes.
const (
	// Success is any answer below 500: it resets the error count.
	Success Outcome = iota
	// ServerError is a 5xx answer.
	ServerError
	// ConnectFailure means the host could not be reached or reset the
	// connection before answering.
	ConnectFailure
	// Abandoned means the client went away first: it says nothing of the
	// host.
	Abandoned
)

// Host is an endpoint in a pool.
type Host[E any] struct {
	key    string
	value  atomic.Pointer[E]
	active atomic.Int64
	pool   *Pool[E]

	// Guarded by pool.mu.
	errors       int
	ejections    int
	ejectedUntil time.Time // zero when in rotation
	returnedAt   time.Time // when last back in rotation
}

// Key returns the host's key.
func (h *Host[E]) Key() string { return h.key }

// Value returns the endpoint.
func (h *Host[E]) Value() E { return *h.value.Load() }

// Done reports the outcome of a request Pick sent to h. Call it exactly
// once per Pick.
func (h *Host[E]) Done(o Outcome) {
	h.active.Add(-1)
	h.pool.record(h, o)
}

// Pool balances over a changing set of hosts. It is safe for concurrent
// use; Update keeps the state (load, ejections) of hosts that stay.
type Pool[E any] struct {
	policy  Policy
	outlier Outlier
	now     func() time.Time

	mu    sync.Mutex
	hosts []*Host[E]
	next  int
	rnd   *rand.Rand
}

// New returns an empty pool. now is the clock (time.Now when nil).
func New[E any](policy Policy, outlier Outlier, now func() time.Time) *Pool[E] {
	if now == nil {
		now = time.Now
	}
	return &Pool[E]{
		policy:  policy,
		outlier: outlier.withDefaults(),
		now:     now,
		rnd:     rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}
}

// Update sets the hosts: values by key. Hosts whose keys remain keep their
// state and see the new value.
func (p *Pool[E]) Update(keys []string, values []E) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := make(map[string]*Host[E], len(p.hosts))
	for _, h := range p.hosts {
		old[h.key] = h
	}
	hosts := make([]*Host[E], 0, len(keys))
	for i, k := range keys {
		h, ok := old[k]
		if !ok {
			h = &Host[E]{key: k, pool: p}
		}
		v := values[i]
		h.value.Store(&v)
		hosts = append(hosts, h)
	}
	p.hosts = hosts
}

// Len returns the number of hosts.
func (p *Pool[E]) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.hosts)
}

// Values returns the endpoints of every host.
func (p *Pool[E]) Values() []E {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]E, len(p.hosts))
	for i, h := range p.hosts {
		out[i] = h.Value()
	}
	return out
}

// Pick chooses a host in rotation, avoiding the keys in avoid (hosts a
// retry already tried) unless nothing else is left. When every host is
// ejected it picks among all (panic mode: better than failing for sure).
// ok is false only for an empty pool. The caller must call Done.
func (p *Pool[E]) Pick(avoid ...string) (h *Host[E], ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.hosts) == 0 {
		return nil, false
	}
	now := p.now()
	var cands []*Host[E]
	if len(p.hosts) <= 16 {
		cands = make([]*Host[E], 0, 16)
	}
	for _, pass := range []func(*Host[E]) bool{
		func(h *Host[E]) bool { return p.inRotation(h, now) && !slices.Contains(avoid, h.key) },
		func(h *Host[E]) bool { return p.inRotation(h, now) },
		func(*Host[E]) bool { return true },
	} {
		for _, h := range p.hosts {
			if pass(h) {
				cands = append(cands, h)
			}
		}
		if len(cands) > 0 {
			break
		}
	}
	h = p.choose(cands)
	h.active.Add(1)
	return h, true
}

func (p *Pool[E]) choose(cands []*Host[E]) *Host[E] {
	if len(cands) == 1 {
		return cands[0]
	}
	if p.policy == RoundRobin {
		p.next++
		return cands[p.next%len(cands)]
	}
	a := cands[p.rnd.IntN(len(cands))]
	b := cands[p.rnd.IntN(len(cands))]
	if b.active.Load() < a.active.Load() {
		return b
	}
	return a
}

// inRotation reports whether h may take requests now, returning it to
// rotation when its ejection is over.
func (p *Pool[E]) inRotation(h *Host[E], now time.Time) bool {
	if h.ejectedUntil.IsZero() {
		return true
	}
	if now.Before(h.ejectedUntil) {
		return false
	}
	h.ejectedUntil = time.Time{}
	h.returnedAt = now
	h.errors = 0
	return true
}

// Ejected reports whether the host with key is ejected now.
func (p *Pool[E]) Ejected(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	for _, h := range p.hosts {
		if h.key == key {
			return !p.inRotation(h, now)
		}
	}
	return false
}

func (p *Pool[E]) record(h *Host[E], o Outcome) {
	if p.outlier.ConsecutiveErrors < 0 || o == Abandoned {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if o == Success {
		h.errors = 0
		return
	}
	h.errors++
	if h.errors < p.outlier.ConsecutiveErrors || !h.ejectedUntil.IsZero() {
		return
	}
	now := p.now()
	if !p.mayEjectLocked(now) {
		return
	}
	if !h.returnedAt.IsZero() {
		forgiven := int(now.Sub(h.returnedAt) / p.outlier.Interval)
		h.ejections = max(h.ejections-forgiven, 0)
	}
	h.ejections++
	d := min(time.Duration(h.ejections)*p.outlier.BaseEjectionTime, max(p.outlier.MaxEjectionTime, p.outlier.BaseEjectionTime))
	h.ejectedUntil = now.Add(d)
	h.errors = 0
}

// mayEjectLocked reports whether one more host may be ejected.
func (p *Pool[E]) mayEjectLocked(now time.Time) bool {
	ejected := 0
	for _, h := range p.hosts {
		if !p.inRotation(h, now) {
			ejected++
		}
	}
	if ejected == 0 {
		return len(p.hosts) > 1 // ejecting the only host helps no one
	}
	return (ejected+1)*100 <= len(p.hosts)*p.outlier.MaxEjectionPercent
}
