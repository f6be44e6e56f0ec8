// Package identity keeps the X.509-SVIDs a proxy presents: fetched from the
// mesh CA per identity on demand, cached, renewed at half life, and the trust
// bundle that comes with them. A Manager is an hbone.SVIDSource and an
// x509bundle.Source; CAClient is the Issuer that asks istiod-lite's CA.
package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Issuer obtains a fresh SVID for an identity, with the trust domain's roots.
type Issuer interface {
	Issue(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, []*x509.Certificate, error)
}

// IssuerFunc adapts a function to Issuer.
type IssuerFunc func(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, []*x509.Certificate, error)

// Issue calls f.
func (f IssuerFunc) Issue(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, []*x509.Certificate, error) {
	return f(ctx, id)
}

// ErrNotReady is returned when an identity's certificate could not be had in time.
var ErrNotReady = errors.New("identity: certificate not ready")

// Config configures a Manager.
type Config struct {
	Issuer Issuer
	// TrustDomain is the mesh's trust domain; its bundle is served.
	TrustDomain spiffeid.TrustDomain
	// Roots, if set, is the initial bundle (before the first issuance).
	Roots []*x509.Certificate
	// RetryMin and RetryMax bound the backoff between failed renewals.
	// Defaults 1 s and 1 min.
	RetryMin, RetryMax time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	Log *slog.Logger
}

// entry is one identity's certificate, or the fetch in progress.
type entry struct {
	svid    *x509svid.SVID
	renewAt time.Time
	err     error         // last failure, when svid is nil
	fetch   chan struct{} // non-nil while a fetch runs; closed when it ends
	retry   time.Duration
}

// Manager caches SVIDs by identity. It is safe for concurrent use.
type Manager struct {
	cfg  Config
	wake chan struct{}

	mu      sync.Mutex
	entries map[spiffeid.ID]*entry
	bundle  *x509bundle.Bundle
}

// NewManager returns a Manager. It starts nothing: Run renews.
func NewManager(cfg Config) (*Manager, error) {
	if cfg.Issuer == nil || cfg.TrustDomain.IsZero() {
		return nil, errors.New("identity: Config needs Issuer and TrustDomain")
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(time.Minute, cfg.RetryMin)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Manager{
		cfg: cfg, wake: make(chan struct{}, 1), entries: map[spiffeid.ID]*entry{},
		bundle: x509bundle.FromX509Authorities(cfg.TrustDomain, cfg.Roots),
	}, nil
}

// Current returns id's certificate if one is in hand and not expired, else
// nil; it never fetches or waits.
func (m *Manager) Current(id spiffeid.ID) *x509svid.SVID {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.entries[id]; e != nil && m.validLocked(e) {
		return e.svid
	}
	return nil
}

// validLocked reports whether e holds a certificate that has not expired.
func (m *Manager) validLocked(e *entry) bool {
	return e.svid != nil && m.cfg.Now().Before(e.svid.Certificates[0].NotAfter)
}

// SVID returns id's certificate, fetching it first if there is none (other
// callers wait for the same fetch). It implements hbone.SVIDSource.
func (m *Manager) SVID(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, error) {
	for {
		m.mu.Lock()
		e := m.entries[id]
		if e == nil {
			e = &entry{}
			m.entries[id] = e
		}
		if m.validLocked(e) {
			sv := e.svid
			m.mu.Unlock()
			return sv, nil
		}
		if e.fetch == nil {
			e.fetch = make(chan struct{})
			m.mu.Unlock()
			if err := m.fetch(ctx, id, e); err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrNotReady, id, err)
			}
			continue
		}
		wait := e.fetch
		m.mu.Unlock()
		select {
		case <-wait:
			m.mu.Lock()
			err := e.err
			ok := e.svid != nil
			m.mu.Unlock()
			if !ok {
				return nil, fmt.Errorf("%w: %s: %w", ErrNotReady, id, err)
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %s: %w", ErrNotReady, id, ctx.Err())
		}
	}
}

// fetch issues id's certificate into e and ends e's fetch.
func (m *Manager) fetch(ctx context.Context, id spiffeid.ID, e *entry) error {
	sv, roots, err := m.cfg.Issuer.Issue(ctx, id)
	if err == nil {
		err = check(sv, id)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		e.err = err
		e.retry = min(max(2*e.retry, m.cfg.RetryMin), m.cfg.RetryMax)
		if e.svid != nil { // keep serving the old one until it expires
			e.renewAt = m.cfg.Now().Add(e.retry)
		}
		m.cfg.Log.Warn("certificate issuance failed", "identity", id, "err", err, "retry", e.retry)
	} else {
		leaf := sv.Certificates[0]
		e.svid, e.err, e.retry = sv, nil, 0
		e.renewAt = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
		if len(roots) > 0 {
			m.bundle = x509bundle.FromX509Authorities(m.cfg.TrustDomain, roots)
		}
		m.cfg.Log.Info("certificate issued", "identity", id, "expires", leaf.NotAfter, "renew", e.renewAt)
	}
	close(e.fetch)
	e.fetch = nil
	select {
	case m.wake <- struct{}{}:
	default:
	}
	return err
}

func check(sv *x509svid.SVID, id spiffeid.ID) error {
	switch {
	case sv == nil || len(sv.Certificates) == 0 || sv.PrivateKey == nil:
		return errors.New("issuer returned an empty SVID")
	case sv.ID != id:
		return fmt.Errorf("issuer returned the SVID of %s, not %s", sv.ID, id)
	}
	return nil
}

// Forget drops id's certificate (its last pod left).
func (m *Manager) Forget(id spiffeid.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.entries[id]; e != nil && e.fetch == nil {
		delete(m.entries, id)
	}
}

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (m *Manager) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if td != m.cfg.TrustDomain {
		return nil, fmt.Errorf("identity: no bundle for trust domain %q", td)
	}
	return m.bundle, nil
}

// Run renews certificates at half life (and retries failures with backoff)
// until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		due, next := m.due()
		for _, id := range due {
			m.renew(ctx, id)
		}
		if len(due) > 0 {
			continue
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(m.cfg.Now()), 0)
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-m.wake:
		case <-t.C:
		}
	}
}

// due returns the identities to renew now and the next renewal time.
func (m *Manager) due() ([]spiffeid.ID, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.cfg.Now()
	var due []spiffeid.ID
	var next time.Time
	for _, id := range slices.SortedFunc(maps.Keys(m.entries), func(a, b spiffeid.ID) int { return compare(a.String(), b.String()) }) {
		e := m.entries[id]
		if e.svid == nil || e.fetch != nil {
			continue
		}
		if !now.Before(e.renewAt) {
			due = append(due, id)
		} else if next.IsZero() || e.renewAt.Before(next) {
			next = e.renewAt
		}
	}
	return due, next
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (m *Manager) renew(ctx context.Context, id spiffeid.ID) {
	m.mu.Lock()
	e := m.entries[id]
	if e == nil || e.fetch != nil {
		m.mu.Unlock()
		return
	}
	e.fetch = make(chan struct{})
	m.mu.Unlock()
	_ = m.fetch(ctx, id, e) // logged; retried with backoff, the old certificate serves meanwhile
}

// Certificate describes a cached certificate, for the admin dump.
type Certificate struct {
	Identity  string    `json:"identity"`
	Serial    string    `json:"serial,omitempty"`
	NotBefore time.Time `json:"notBefore,omitzero"`
	NotAfter  time.Time `json:"notAfter,omitzero"`
	RenewAt   time.Time `json:"renewAt,omitzero"`
	Error     string    `json:"error,omitempty"`
}

// Certificates lists the cached certificates by identity.
func (m *Manager) Certificates() []Certificate {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Certificate
	for id, e := range m.entries {
		c := Certificate{Identity: id.String()}
		if e.svid != nil {
			leaf := e.svid.Certificates[0]
			c.Serial, c.NotBefore, c.NotAfter, c.RenewAt = leaf.SerialNumber.Text(16), leaf.NotBefore, leaf.NotAfter, e.renewAt
		}
		if e.err != nil {
			c.Error = e.err.Error()
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Certificate) int { return compare(a.Identity, b.Identity) })
	return out
}
