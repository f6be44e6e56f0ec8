// Package ca is istiod-lite's certificate authority: a root kept in a Secret (created
// once, reused after restarts and by every replica) or an intermediate plugged in from
// a Secret, signing ECDSA P-256 workload certificates for SPIFFE identities over gRPC
// to callers authenticated by ServiceAccount token (DESIGN.md 2).
package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Secret names and keys, as Istio's: a self-signed root in istio-ca-secret, or an
// operator-provided intermediate in cacerts.
const (
	SelfSignedSecret = "istio-ca-secret"
	PluggedSecret    = "cacerts"
	KeyCACert        = "ca-cert.pem"
	KeyCAKey         = "ca-key.pem"
	KeyCertChain     = "cert-chain.pem"
	KeyRootCert      = "root-cert.pem"
)

// Authority signs certificates with one CA key.
type Authority struct {
	signer   crypto.Signer
	cert     *x509.Certificate
	chainPEM []string // the signing cert and its parents, excluding the root
	rootsPEM []string
	roots    *x509.CertPool
	td       spiffeid.TrustDomain
	now      func() time.Time
}

// AuthorityConfig says where the CA key lives.
type AuthorityConfig struct {
	Namespace   string
	TrustDomain spiffeid.TrustDomain
	// RootValidity of a self-signed root created on first start (default 10 years).
	RootValidity time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// LoadOrCreate returns the authority of the cluster: the plugged-in intermediate from
// the cacerts Secret if present, else the self-signed root from istio-ca-secret,
// creating that Secret if it does not exist yet. Concurrent replicas agree: the one
// whose create loses the race reads the winner's root.
func LoadOrCreate(ctx context.Context, client kubernetes.Interface, cfg AuthorityConfig) (*Authority, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RootValidity == 0 {
		cfg.RootValidity = 10 * 365 * 24 * time.Hour
	}
	secrets := client.CoreV1().Secrets(cfg.Namespace)
	plugged, err := secrets.Get(ctx, PluggedSecret, metav1.GetOptions{})
	switch {
	case err == nil:
		a, err := fromSecret(plugged, cfg)
		if err != nil {
			return nil, fmt.Errorf("plugged-in CA secret %s/%s: %w", cfg.Namespace, PluggedSecret, err)
		}
		return a, nil
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("read secret %s/%s: %w", cfg.Namespace, PluggedSecret, err)
	}
	for range 3 {
		s, err := secrets.Get(ctx, SelfSignedSecret, metav1.GetOptions{})
		if err == nil {
			a, err := fromSecret(s, cfg)
			if err != nil {
				return nil, fmt.Errorf("CA secret %s/%s: %w", cfg.Namespace, SelfSignedSecret, err)
			}
			return a, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("read secret %s/%s: %w", cfg.Namespace, SelfSignedSecret, err)
		}
		s, err = newRootSecret(cfg)
		if err != nil {
			return nil, err
		}
		if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create secret %s/%s: %w", cfg.Namespace, SelfSignedSecret, err)
		}
	}
	return nil, fmt.Errorf("CA secret %s/%s: created but not readable", cfg.Namespace, SelfSignedSecret)
}

func newRootSecret(cfg AuthorityConfig) (*corev1.Secret, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	now := cfg.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{Organization: []string{cfg.TrustDomain.Name()}, CommonName: "Ambit root CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(cfg.RootValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-sign CA: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode CA key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: SelfSignedSecret, Namespace: cfg.Namespace},
		Type:       "istio.io/ca-root",
		Data: map[string][]byte{
			KeyCACert: certPEM,
			KeyCAKey:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		},
	}, nil
}

// fromSecret loads a CA from Istio's secret layout: ca-cert.pem and ca-key.pem, and
// for an intermediate cert-chain.pem (ca-cert up to the root) and root-cert.pem.
func fromSecret(s *corev1.Secret, cfg AuthorityConfig) (*Authority, error) {
	certs, err := parseCerts(s.Data[KeyCACert])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", KeyCACert, err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no certificate", KeyCACert)
	}
	signer, err := parseKey(s.Data[KeyCAKey])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", KeyCAKey, err)
	}
	cert := certs[0]
	if !cert.IsCA {
		return nil, errors.New("ca-cert.pem is not a CA certificate")
	}
	if !publicKeysEqual(cert.PublicKey, signer.Public()) {
		return nil, errors.New("ca-key.pem does not match ca-cert.pem")
	}
	a := &Authority{signer: signer, cert: cert, td: cfg.TrustDomain, now: cfg.Now, roots: x509.NewCertPool()}
	rootPEM := s.Data[KeyRootCert]
	if len(rootPEM) == 0 { // self-signed: the CA is the root
		rootPEM = s.Data[KeyCACert]
	}
	roots, err := parseCerts(rootPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", KeyRootCert, err)
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("%s: no certificate", KeyRootCert)
	}
	for _, r := range roots {
		a.roots.AddCert(r)
		a.rootsPEM = append(a.rootsPEM, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})))
	}
	chain := certs
	if c, err := parseCerts(s.Data[KeyCertChain]); err == nil && len(c) > 0 {
		chain = c
	}
	inter := x509.NewCertPool()
	for _, c := range chain {
		if !c.Equal(cert) && !isRoot(c, roots) {
			a.chainPEM = append(a.chainPEM, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})))
			inter.AddCert(c)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: a.roots, Intermediates: inter, CurrentTime: cfg.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("CA certificate does not chain to root-cert.pem: %w", err)
	}
	if !isRoot(cert, roots) {
		a.chainPEM = append([]string{string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))}, a.chainPEM...)
	}
	return a, nil
}

func isRoot(c *x509.Certificate, roots []*x509.Certificate) bool {
	for _, r := range roots {
		if c.Equal(r) {
			return true
		}
	}
	return false
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out, nil
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
}

func parseKey(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM key")
	}
	var k any
	var err error
	switch blk.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key of type %T cannot sign", k)
	}
	return s, nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n.Add(n, big.NewInt(1))
}

// RootsPEM is the trust bundle: the PEM roots.
func (a *Authority) RootsPEM() []string { return append([]string(nil), a.rootsPEM...) }

// Roots is the trust bundle as a pool.
func (a *Authority) Roots() *x509.CertPool { return a.roots.Clone() }

// TrustDomain is the trust domain the authority signs for.
func (a *Authority) TrustDomain() spiffeid.TrustDomain { return a.td }
