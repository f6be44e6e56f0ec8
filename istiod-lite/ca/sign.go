package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrBadCSR is wrapped by every refusal of a malformed or mismatched CSR.
var ErrBadCSR = errors.New("bad certificate signing request")

// maxCSRBytes bounds the PEM a caller may send.
const maxCSRBytes = 16 << 10

// ParseCSR reads a PEM PKCS#10 request, checks its signature, and requires an ECDSA
// P-256 key and exactly one URI SAN, a SPIFFE ID, which it returns.
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, spiffeid.ID, error) {
	if len(csrPEM) > maxCSRBytes {
		return nil, spiffeid.ID{}, fmt.Errorf("%w: larger than %d bytes", ErrBadCSR, maxCSRBytes)
	}
	blk, _ := pem.Decode(csrPEM)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, spiffeid.ID{}, fmt.Errorf("%w: no PEM CERTIFICATE REQUEST block", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, spiffeid.ID{}, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, spiffeid.ID{}, fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, spiffeid.ID{}, fmt.Errorf("%w: key must be ECDSA P-256", ErrBadCSR)
	}
	if len(csr.URIs) != 1 || len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) > 0 {
		return nil, spiffeid.ID{}, fmt.Errorf("%w: must have exactly one SAN, a SPIFFE ID URI", ErrBadCSR)
	}
	id, err := spiffeid.FromURI(csr.URIs[0])
	if err != nil {
		return nil, spiffeid.ID{}, fmt.Errorf("%w: SAN: %w", ErrBadCSR, err)
	}
	return csr, id, nil
}

// Sign issues a workload certificate for id to the CSR's key, valid for ttl (cut to
// the CA's own expiry). The CSR's SPIFFE ID must be id. It returns the PEM chain, leaf
// first, without the root.
func (a *Authority) Sign(csrPEM []byte, id spiffeid.ID, ttl time.Duration) ([]string, error) {
	csr, csrID, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	if csrID != id {
		return nil, fmt.Errorf("%w: CSR asks for %s, not %s", ErrBadCSR, csrID, id)
	}
	if !id.MemberOf(a.td) {
		return nil, fmt.Errorf("identity %s is not in trust domain %s", id, a.td)
	}
	leaf, err := a.issue(csr.PublicKey, []*url.URL{id.URL()}, nil, ttl, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	return append([]string{string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf}))}, a.chainPEM...), nil
}

func (a *Authority) issue(pub crypto.PublicKey, uris []*url.URL, dns []string, ttl time.Duration, usage ...x509.ExtKeyUsage) ([]byte, error) {
	now := a.now()
	notAfter := now.Add(ttl)
	if notAfter.After(a.cert.NotAfter) {
		notAfter = a.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		NotBefore:             now.Add(-time.Minute), // tolerate small clock skew
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           usage,
		BasicConstraintsValid: true,
		URIs:                  uris,
		DNSNames:              dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, pub, a.signer)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	return der, nil
}

// ServingCertificate issues istiod-lite's own TLS certificate for its gRPC port:
// identity id and the DNS names clients dial.
func (a *Authority) ServingCertificate(id spiffeid.ID, dnsNames []string, ttl time.Duration) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate serving key: %w", err)
	}
	der, err := a.issue(key.Public(), []*url.URL{id.URL()}, dnsNames, ttl, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, err
	}
	chain := [][]byte{der}
	for _, p := range a.chainPEM {
		if blk, _ := pem.Decode([]byte(p)); blk != nil {
			chain = append(chain, blk.Bytes)
		}
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse serving certificate: %w", err)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}
