package server_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// pki is a throwaway CA issuing DNS-named certificates (ECDSA P-256, as
// the mesh's), for the TLS baselines of the benchmarks. Each file it writes
// lives in dir.
type pki struct {
	tb   testing.TB
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newPKI(tb testing.TB) *pki {
	tb.Helper()
	p := &pki{tb: tb, dir: tb.TempDir(), key: newP256(tb)}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "bench CA"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, p.key.Public(), p.key)
	if err != nil {
		tb.Fatal(err)
	}
	if p.cert, err = x509.ParseCertificate(der); err != nil {
		tb.Fatal(err)
	}
	p.pool = x509.NewCertPool()
	p.pool.AddCert(p.cert)
	p.write("ca.pem", pemBlock("CERTIFICATE", der))
	return p
}

// caFile is the CA certificate's PEM file.
func (p *pki) caFile() string { return filepath.Join(p.dir, "ca.pem") }

// issue makes a certificate for name (server and client use) and writes
// name.pem: certificate then key, as HAProxy's crt wants.
func (p *pki) issue(name string) (tls.Certificate, string) {
	p.tb.Helper()
	key := newP256(p.tb)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		p.tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, key.Public(), p.key)
	if err != nil {
		p.tb.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		p.tb.Fatal(err)
	}
	file := p.write(name+".pem", append(pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", keyDER)...))
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, file
}

func (p *pki) write(name string, b []byte) string {
	p.tb.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		p.tb.Fatal(err)
	}
	return path
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func newP256(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return key
}
