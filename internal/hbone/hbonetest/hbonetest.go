// Package hbonetest provides in-memory SPIFFE certificate authorities and
// SVID sources for tests of HBONE and its users (ztunnel, waypoint).
package hbonetest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Validity of what a CA issues, counted from time.Now() at issuance (which
// is the fake clock inside a testing/synctest bubble).
const Validity = 24 * time.Hour

// CA is a self-signed root for one trust domain, with an ECDSA P-256 key.
type CA struct {
	TrustDomain spiffeid.TrustDomain
	Cert        *x509.Certificate
	key         *ecdsa.PrivateKey
}

// NewCA creates a root CA for the trust domain td ("cluster.local").
func NewCA(tb testing.TB, td string) *CA {
	tb.Helper()
	trust, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		tb.Fatalf("hbonetest: trust domain %q: %v", td, err)
	}
	key := newKey(tb)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(tb),
		Subject:               pkix.Name{Organization: []string{"hbonetest"}, CommonName: td},
		URIs:                  []*url.URL{trust.ID().URL()},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatalf("hbonetest: create CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("hbonetest: parse CA: %v", err)
	}
	return &CA{TrustDomain: trust, Cert: cert, key: key}
}

// Bundle returns the trust bundle holding this CA.
func (ca *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.TrustDomain, []*x509.Certificate{ca.Cert})
}

// SVID issues an X.509-SVID for id (a SPIFFE ID string, possibly of another
// trust domain than the CA's, to test that peers refuse it).
func (ca *CA) SVID(tb testing.TB, id string) *x509svid.SVID {
	tb.Helper()
	sid, err := spiffeid.FromString(id)
	if err != nil {
		tb.Fatalf("hbonetest: SPIFFE ID %q: %v", id, err)
	}
	key := newKey(tb)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(tb),
		URIs:         []*url.URL{sid.URL()},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(Validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		tb.Fatalf("hbonetest: issue %s: %v", id, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("hbonetest: parse %s: %v", id, err)
	}
	return &x509svid.SVID{ID: sid, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

// Source is a mutable set of SVIDs by identity, safe for concurrent use.
// It implements hbone.SVIDSource; Set replaces an SVID, as rotation would.
type Source struct {
	mu    sync.Mutex
	svids map[spiffeid.ID]*x509svid.SVID
	asked map[spiffeid.ID]int
}

// NewSource returns a Source holding svids.
func NewSource(svids ...*x509svid.SVID) *Source {
	s := &Source{svids: make(map[spiffeid.ID]*x509svid.SVID), asked: make(map[spiffeid.ID]int)}
	for _, sv := range svids {
		s.Set(sv)
	}
	return s
}

// Set adds or replaces the SVID of sv.ID.
func (s *Source) Set(sv *x509svid.SVID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.svids[sv.ID] = sv
}

// SVID returns id's SVID, or an error if the source has none.
func (s *Source) SVID(_ context.Context, id spiffeid.ID) (*x509svid.SVID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked[id]++
	sv, ok := s.svids[id]
	if !ok {
		return nil, fmt.Errorf("hbonetest: no SVID for %s", id)
	}
	return sv, nil
}

// Asked returns how many times id's SVID was asked for (once per TLS
// handshake presenting it).
func (s *Source) Asked(id spiffeid.ID) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asked[id]
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("hbonetest: generate key: %v", err)
	}
	return key
}

func serial(tb testing.TB) *big.Int {
	tb.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		tb.Fatalf("hbonetest: serial: %v", err)
	}
	return n
}
