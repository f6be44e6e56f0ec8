package identity

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// ControlPlane says how a proxy reaches istiod-lite.
type ControlPlane struct {
	Addr       string // host:port
	ServerName string // name istiod-lite's serving certificate carries
	RootFile   string // PEM mesh roots (ConfigMap istio-ca-root-cert)
	TokenFile  string // projected ServiceAccount token, audience istio-ca
	Domain     spiffeid.TrustDomain
}

// Dial opens the one gRPC connection a proxy uses for both xDS and the CA: TLS 1.3
// verified against the mesh roots, the token on every call. It returns the roots too:
// they are the proxy's first trust bundle. Dial does no network I/O; grpc connects
// on first use.
func (cp ControlPlane) Dial() (*grpc.ClientConn, []*x509.Certificate, error) {
	b, err := x509bundle.Load(cp.Domain, cp.RootFile)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: mesh root: %w", err)
	}
	if b.Empty() {
		return nil, nil, fmt.Errorf("identity: mesh root: no certificate in %s", cp.RootFile)
	}
	roots := b.X509Authorities()
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	conn, err := grpc.NewClient(cp.Addr,
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			RootCAs: pool, ServerName: cp.ServerName, MinVersion: tls.VersionTLS13})),
		grpc.WithPerRPCCredentials(TokenCredentials{File: cp.TokenFile}))
	if err != nil {
		return nil, nil, fmt.Errorf("identity: control plane %s: %w", cp.Addr, err)
	}
	return conn, roots, nil
}
