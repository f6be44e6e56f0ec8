package identity

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	caapi "github.com/ambit-mesh/ambit/api/ca"
)

// CAClient issues certificates from istiod-lite's certificate service
// (api/ca), authenticating with a projected ServiceAccount token read from a
// file at every call (kubelet rotates it).
type CAClient struct {
	client    caapi.CertificateServiceClient
	tokenFile string
	ttl       time.Duration
}

// NewCAClient returns a client over conn. tokenFile holds the bearer token
// ("" sends none: tests); ttl is the lifetime asked for (0: the CA's default).
func NewCAClient(conn grpc.ClientConnInterface, tokenFile string, ttl time.Duration) *CAClient {
	return &CAClient{client: caapi.NewCertificateServiceClient(conn), tokenFile: tokenFile, ttl: ttl}
}

// Issue generates a P-256 key and a CSR for id, asks the CA to sign it on
// behalf of a pod (impersonation), and checks what comes back.
func (c *CAClient) Issue(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, []*x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: generate key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: CSR for %s: %w", id, err)
	}
	if c.tokenFile != "" {
		tok, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return nil, nil, fmt.Errorf("identity: read token: %w", err)
		}
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+string(bytes.TrimSpace(tok)))
	}
	resp, err := c.client.CreateCertificate(ctx, &caapi.CreateCertificateRequest{
		Csr:                     string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
		ValidityDurationSeconds: int64(c.ttl / time.Second),
		ImpersonatedIdentity:    id.String(),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("identity: CA refused %s: %w", id, err)
	}
	return parseResponse(resp, id, key)
}

// parseResponse checks the CA's answer: a chain for id's key that verifies
// against the roots sent with it.
func parseResponse(resp *caapi.CreateCertificateResponse, id spiffeid.ID, key *ecdsa.PrivateKey) (*x509svid.SVID, []*x509.Certificate, error) {
	var chain, roots []*x509.Certificate
	for _, p := range resp.GetCertChain() {
		certs, err := parsePEM(p)
		if err != nil {
			return nil, nil, fmt.Errorf("identity: chain for %s: %w", id, err)
		}
		chain = append(chain, certs...)
	}
	for _, p := range resp.GetTrustBundle() {
		certs, err := parsePEM(p)
		if err != nil {
			return nil, nil, fmt.Errorf("identity: trust bundle: %w", err)
		}
		roots = append(roots, certs...)
	}
	if len(chain) == 0 || len(roots) == 0 {
		return nil, nil, fmt.Errorf("identity: CA answer for %s lacks a chain or roots", id)
	}
	got, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return nil, nil, fmt.Errorf("identity: leaf certificate for %s: %w", id, err)
	}
	if got != id {
		return nil, nil, fmt.Errorf("identity: CA signed %s when asked for %s", got, id)
	}
	if pub, ok := chain[0].PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, nil, fmt.Errorf("identity: CA signed another key for %s", id)
	}
	pool, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, nil, fmt.Errorf("identity: chain for %s does not verify: %w", id, err)
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, roots, nil
}

func parsePEM(s string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := []byte(s)
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}
